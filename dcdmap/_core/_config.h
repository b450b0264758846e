/* Build-time switches of the engine.  setup.py defines DCDMAP_DEBUG=1 when the
 * environment variable DCDMAP_DEBUG=1 is set at build time. */
#ifndef DCDMAP_CONFIG_H
#define DCDMAP_CONFIG_H
#ifndef DCDMAP_DEBUG
#define DCDMAP_DEBUG 0
#endif
#endif
