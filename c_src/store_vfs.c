/* A VFS shim for the store's writer connection (synchronous=FULL only).
 *
 * SQLite writes each WAL frame with two writes (its 24-byte header, then the page),
 * so a commit of N pages costs 2N pwrite(2) calls; with 1 KiB pages and a few
 * scattered pages per timer fire that was ~15% of the writer thread's CPU during
 * a fire storm (bench/RESULTS.md, "Timers (issue 6, fifth pass)"). The shim keeps
 * the WAL's contiguous writes in a buffer and hands them to the file in one write
 * when SQLite syncs the WAL, which with synchronous=FULL it does at every commit
 * before it publishes the commit in the WAL index: other connections (readers, the
 * checkpoint thread) only read frames a commit published, so they never miss a
 * buffered byte. The writer's own reads of a buffered range (a frame rewritten
 * inside its transaction, a page spilled and read back) flush first, so do a
 * truncate, a size query and the close. A write that does not continue the buffer
 * flushes it first, so writes reach the file in the order SQLite issued them.
 * If the flush fails, the call that caused it returns the error (for a sync: the
 * commit fails and SQLite rolls the transaction back, as for a failed write).
 *
 * Every other file (the database, its shared memory) is the default VFS's own
 * object, opened in place: no call goes through the shim. Each store registers
 * its own shim under a name made from its address and unregisters it at close,
 * so two stores in one node share nothing. */
#include "store_vfs.h"

#include <stdio.h>
#include <string.h>

/* Bytes; a larger write goes straight to the file. The default VFS writes at most
 * 128 KiB - 1 per call (it masks the length to 17 bits: SQLite never asks for more
 * than one page or frame header), so the buffer must stay below that. */
#define WB_CAP (64 * 1024)

typedef struct {
    sqlite3_file base;  /* pMethods = &wb_methods */
    sqlite3_file *real; /* the default VFS's file, right after this header */
    unsigned char *buf; /* WB_CAP bytes */
    sqlite3_int64 off;  /* file offset of buf[0] */
    int len;            /* bytes buffered */
} wb_file;

#define WB_HDR ((int)((sizeof(wb_file) + 7) & ~(size_t)7))

static sqlite3_vfs *root_of(sqlite3_vfs *vfs)
{
    return ((store_vfs *)vfs->pAppData)->root;
}

static int wb_flush(wb_file *p)
{
    if (p->len == 0)
        return SQLITE_OK;
    int n = p->len;
    p->len = 0; /* on failure too: the transaction that wrote them fails */
    return p->real->pMethods->xWrite(p->real, p->buf, n, p->off);
}

static int wb_close(sqlite3_file *f)
{
    wb_file *p = (wb_file *)f;
    int rc = wb_flush(p);
    int rc2 = p->real->pMethods->xClose(p->real);
    sqlite3_free(p->buf);
    p->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

static int wb_read(sqlite3_file *f, void *out, int amt, sqlite3_int64 off)
{
    wb_file *p = (wb_file *)f;
    if (p->len > 0 && off < p->off + p->len && off + amt > p->off) {
        int rc = wb_flush(p);
        if (rc != SQLITE_OK)
            return rc;
    }
    return p->real->pMethods->xRead(p->real, out, amt, off);
}

static int wb_write(sqlite3_file *f, const void *data, int amt, sqlite3_int64 off)
{
    wb_file *p = (wb_file *)f;
    if (p->len > 0 && (off != p->off + p->len || p->len + amt > WB_CAP)) {
        int rc = wb_flush(p);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (amt > WB_CAP)
        return p->real->pMethods->xWrite(p->real, data, amt, off);
    if (p->len == 0)
        p->off = off;
    memcpy(p->buf + p->len, data, (size_t)amt);
    p->len += amt;
    return SQLITE_OK;
}

static int wb_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    wb_file *p = (wb_file *)f;
    int rc = wb_flush(p);
    return rc != SQLITE_OK ? rc : p->real->pMethods->xTruncate(p->real, size);
}

static int wb_sync(sqlite3_file *f, int flags)
{
    wb_file *p = (wb_file *)f;
    int rc = wb_flush(p);
    return rc != SQLITE_OK ? rc : p->real->pMethods->xSync(p->real, flags);
}

static int wb_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    wb_file *p = (wb_file *)f;
    int rc = wb_flush(p);
    return rc != SQLITE_OK ? rc : p->real->pMethods->xFileSize(p->real, size);
}

static int wb_lock(sqlite3_file *f, int level)
{
    wb_file *p = (wb_file *)f;
    return p->real->pMethods->xLock(p->real, level);
}

static int wb_unlock(sqlite3_file *f, int level)
{
    wb_file *p = (wb_file *)f;
    return p->real->pMethods->xUnlock(p->real, level);
}

static int wb_check_reserved(sqlite3_file *f, int *out)
{
    wb_file *p = (wb_file *)f;
    return p->real->pMethods->xCheckReservedLock(p->real, out);
}

static int wb_file_control(sqlite3_file *f, int op, void *arg)
{
    wb_file *p = (wb_file *)f;
    int rc = wb_flush(p);
    return rc != SQLITE_OK ? rc : p->real->pMethods->xFileControl(p->real, op, arg);
}

static int wb_sector_size(sqlite3_file *f)
{
    wb_file *p = (wb_file *)f;
    return p->real->pMethods->xSectorSize(p->real);
}

static int wb_device(sqlite3_file *f)
{
    wb_file *p = (wb_file *)f;
    return p->real->pMethods->xDeviceCharacteristics(p->real);
}

/* Version 1: SQLite maps no shared memory and fetches no page through a WAL file. */
static const sqlite3_io_methods wb_methods = {
    1,           wb_close,    wb_read,        wb_write,          wb_truncate,
    wb_sync,     wb_file_size, wb_lock,       wb_unlock,         wb_check_reserved,
    wb_file_control, wb_sector_size, wb_device, NULL, NULL, NULL, NULL, NULL, NULL,
};

static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    sqlite3_vfs *root = root_of(vfs);
    if (!(flags & SQLITE_OPEN_WAL))
        return root->xOpen(root, name, f, flags, out); /* in place: no shim */
    wb_file *p = (wb_file *)f;
    memset(p, 0, sizeof *p);
    p->real = (sqlite3_file *)((char *)f + WB_HDR);
    p->buf = sqlite3_malloc(WB_CAP);
    if (p->buf == NULL)
        return SQLITE_NOMEM;
    int rc = root->xOpen(root, name, p->real, flags, out);
    if (rc != SQLITE_OK || p->real->pMethods == NULL) {
        sqlite3_free(p->buf);
        p->buf = NULL;
        return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
    }
    p->base.pMethods = &wb_methods;
    return SQLITE_OK;
}

static int v_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    sqlite3_vfs *root = root_of(vfs);
    return root->xDelete(root, name, sync_dir);
}

static int v_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    sqlite3_vfs *root = root_of(vfs);
    return root->xAccess(root, name, flags, out);
}

static int v_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    sqlite3_vfs *root = root_of(vfs);
    return root->xFullPathname(root, name, n, out);
}

static void *v_dl_open(sqlite3_vfs *vfs, const char *name)
{
    sqlite3_vfs *root = root_of(vfs);
    return root->xDlOpen(root, name);
}

static void v_dl_error(sqlite3_vfs *vfs, int n, char *msg)
{
    sqlite3_vfs *root = root_of(vfs);
    root->xDlError(root, n, msg);
}

static void (*v_dl_sym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
    sqlite3_vfs *root = root_of(vfs);
    return root->xDlSym(root, h, sym);
}

static void v_dl_close(sqlite3_vfs *vfs, void *h)
{
    sqlite3_vfs *root = root_of(vfs);
    root->xDlClose(root, h);
}

static int v_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    sqlite3_vfs *root = root_of(vfs);
    return root->xRandomness(root, n, out);
}

static int v_sleep(sqlite3_vfs *vfs, int us)
{
    sqlite3_vfs *root = root_of(vfs);
    return root->xSleep(root, us);
}

static int v_current_time(sqlite3_vfs *vfs, double *out)
{
    sqlite3_vfs *root = root_of(vfs);
    return root->xCurrentTime(root, out);
}

static int v_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    sqlite3_vfs *root = root_of(vfs);
    return root->xGetLastError(root, n, out);
}

static int v_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    sqlite3_vfs *root = root_of(vfs);
    return root->xCurrentTimeInt64(root, out);
}

int store_vfs_register(store_vfs *v)
{
    sqlite3_vfs *root = sqlite3_vfs_find(NULL);
    if (root == NULL || root->iVersion < 2 || root->xCurrentTimeInt64 == NULL)
        return SQLITE_ERROR;
    memset(&v->base, 0, sizeof v->base);
    v->root = root;
    snprintf(v->name, sizeof v->name, "aion-wal-buffer-%p", (void *)v);
    v->base.iVersion = 2; /* no system-call overrides through the shim */
    v->base.szOsFile = WB_HDR + root->szOsFile;
    v->base.mxPathname = root->mxPathname;
    v->base.zName = v->name;
    v->base.pAppData = v;
    v->base.xOpen = v_open;
    v->base.xDelete = v_delete;
    v->base.xAccess = v_access;
    v->base.xFullPathname = v_full_pathname;
    v->base.xDlOpen = v_dl_open;
    v->base.xDlError = v_dl_error;
    v->base.xDlSym = v_dl_sym;
    v->base.xDlClose = v_dl_close;
    v->base.xRandomness = v_randomness;
    v->base.xSleep = v_sleep;
    v->base.xCurrentTime = v_current_time;
    v->base.xGetLastError = v_last_error;
    v->base.xCurrentTimeInt64 = v_current_time64;
    int rc = sqlite3_vfs_register(&v->base, 0);
    v->registered = rc == SQLITE_OK;
    return rc;
}

void store_vfs_unregister(store_vfs *v)
{
    if (v->registered) {
        (void)sqlite3_vfs_unregister(&v->base);
        v->registered = 0;
    }
}
