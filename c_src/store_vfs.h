/* A VFS shim for the store's writer connection: it gathers the WAL writes of a
 * transaction and hands them to the file in one write at the transaction's sync.
 * See store_vfs.c. */
#ifndef AION_STORE_VFS_H
#define AION_STORE_VFS_H

#include <sqlite3.h>

typedef struct {
    sqlite3_vfs base; /* what SQLite sees; base.pAppData points back here */
    sqlite3_vfs *root; /* the default VFS every call goes to */
    char name[48];
    int registered;
} store_vfs;

/* Registers a shim over the default VFS under a name unique to this store (its
 * address), so two stores in one node share nothing. SQLITE_OK or an SQLite code. */
int store_vfs_register(store_vfs *v);

/* Unregisters it; every connection that used it must be closed. */
void store_vfs_unregister(store_vfs *v);

#endif
