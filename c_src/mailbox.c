/* mailbox: marker delivery, two-phase completion retention and wake epochs.
 *
 * When an arrival for a workflow process (activity result, signal, timer, child
 * outcome, any history event appended by someone else) has been made durable, the
 * appender retains the payload here under (pid, correlation) and sends the process a
 * bare atom marker. The woken process takes what is retained, exactly once. Each
 * blocking entry of the process bumps its wake epoch, so a confirmer can re-send the
 * marker until the epoch moves (the process looked) or reads `exited`.
 *
 * State. Everything lives in one mailbox resource (one per engine); there is no
 * mutable C global, so two mailboxes never share an entry. A mailbox holds, under
 * one mutex:
 *   - a hash table of per-pid records keyed by the pid's internal hash, compared
 *     with enif_compare_pids. It grows by doubling, migrating a few buckets per
 *     call (incremental rehash) so no call walks the whole table;
 *   - per record: the wake epoch, an exited flag, the process monitor (set with
 *     enif_monitor_process at first sight of the pid) and the retained entries in
 *     retain order (a singly linked list with a tail pointer);
 *   - per entry: a private ErlNifEnv holding copies of the correlation and the
 *     payload, and the phash2 of the correlation. Correlations match when the
 *     hashes are equal and enif_is_identical says so (exact term equality, so 1
 *     and 1.0 are different correlations). Retaining under an existing
 *     (pid, correlation) replaces the entry; the replacement moves to the end of
 *     the retain order (it is the newest arrival).
 *
 * Process exit. The monitor's down callback drops the pid's entries and turns the
 * record into a tombstone (epoch reads `exited`). Tombstones sit in a FIFO capped at
 * `max_tombstones` per mailbox (set at creation; aion_mailbox uses 65,536): when the
 * cap is exceeded the oldest tombstone is dropped and that pid's epoch reads 0 again,
 * so memory stays bounded across millions of short-lived processes. A confirmer must
 * therefore also stop when the process is not alive (is_process_alive/1); the
 * tombstone is the fast path. forget/2 drops a record (entries, monitor, tombstone).
 * A pid that is dead at first sight (retain or bump_epoch) is stamped as a tombstone
 * too. Local pids are reused only after the node's pid space wraps; a tombstoned pid
 * that is alive again is a new process, and retain/bump_epoch revive its record.
 *
 * Scheduling. Every NIF runs on a normal scheduler: under the mutex there is only a
 * hash lookup, list surgery over one pid's entries and at most MB_REHASH_STEP bucket
 * migrations. Copies into entry envs are made before taking the mutex, copies back
 * into the caller's env, env frees, demonitors and the marker send after releasing
 * it. (The down callback and enif_monitor_process do run under the mutex; neither
 * takes a lock the other side holds while waiting for the mutex.)
 *
 * Destruction. The runtime removes a resource's monitors before it runs the
 * destructor and never runs the down callback concurrently with or after it, so the
 * destructor only frees memory: entries and their envs, records, buckets, the mutex.
 */
#include <stdint.h>
#include <string.h>

#include "mailbox.h"

#define MB_INITIAL_BUCKETS 64u     /* power of two */
#define MB_REHASH_STEP     16u     /* buckets migrated per call while growing */
#define MB_PID_SALT        0x61696f6eu

struct aion_mailbox_priv {
    ErlNifResourceType *rt;
    ERL_NIF_TERM atom_ok;
    ERL_NIF_TERM atom_exited;
    ERL_NIF_TERM atom_none;
    ERL_NIF_TERM atom_enomem;
    ERL_NIF_TERM atom_busy;
};

typedef struct mb_entry {
    struct mb_entry *next;   /* retain order */
    ErlNifEnv *env;          /* owns corr and payload */
    ERL_NIF_TERM corr;
    ERL_NIF_TERM payload;
    ErlNifUInt64 corr_hash;  /* phash2 of corr */
} mb_entry;

typedef struct mb_proc {
    struct mb_proc *hnext;   /* hash chain */
    struct mb_proc *tprev;   /* tombstone FIFO (exited records only) */
    struct mb_proc *tnext;
    ErlNifUInt64 hash;
    ErlNifPid pid;
    ErlNifUInt64 epoch;
    ErlNifMonitor mon;
    int monitored;           /* mon is live */
    int exited;              /* tombstone: no entries, no monitor */
    mb_entry *head;
    mb_entry *tail;
    size_t n;
} mb_proc;

typedef struct {
    mb_proc **b;             /* NULL: table not in use */
    size_t mask;             /* bucket count - 1 */
} mb_table;

typedef struct {
    ErlNifMutex *lock;
    mb_table t[2];           /* t[1] is in use while t[0] is migrated into it */
    size_t rehash_pos;       /* next bucket of t[0] to migrate */
    size_t nprocs;           /* records, tombstones included */
    size_t nentries;         /* retained entries over all pids */
    size_t ntomb;
    size_t max_tomb;
    mb_proc *tomb_head;      /* oldest */
    mb_proc *tomb_tail;
} mailbox;

enum { MB_LIVE, MB_EXITED, MB_NOMEM };

/* ---------------------------------------------------------------------------
 * Entries
 * ------------------------------------------------------------------------- */

static mb_entry *entry_new(ERL_NIF_TERM corr, ERL_NIF_TERM payload)
{
    mb_entry *e = enif_alloc(sizeof *e);
    if (e == NULL)
        return NULL;
    e->env = enif_alloc_env();
    if (e->env == NULL) {
        enif_free(e);
        return NULL;
    }
    e->next = NULL;
    e->corr = enif_make_copy(e->env, corr);
    e->payload = enif_make_copy(e->env, payload);
    e->corr_hash = enif_hash(ERL_NIF_PHASH2, corr, 0);
    return e;
}

static void entries_free(mb_entry *e)
{
    while (e != NULL) {
        mb_entry *next = e->next;
        enif_free_env(e->env);
        enif_free(e);
        e = next;
    }
}

static void proc_append(mb_proc *p, mb_entry *e)
{
    e->next = NULL;
    if (p->tail != NULL)
        p->tail->next = e;
    else
        p->head = e;
    p->tail = e;
    p->n++;
}

/* Unlinks and returns the entry of p whose correlation is identical to corr. */
static mb_entry *proc_detach(mb_proc *p, ERL_NIF_TERM corr, ErlNifUInt64 h)
{
    mb_entry *prev = NULL;
    for (mb_entry *e = p->head; e != NULL; prev = e, e = e->next) {
        if (e->corr_hash != h || !enif_is_identical(e->corr, corr))
            continue;
        if (prev != NULL)
            prev->next = e->next;
        else
            p->head = e->next;
        if (p->tail == e)
            p->tail = prev;
        e->next = NULL;
        p->n--;
        return e;
    }
    return NULL;
}

/* Unlinks and returns all entries of p, in retain order. */
static mb_entry *proc_detach_all(mailbox *mb, mb_proc *p)
{
    mb_entry *all = p->head;
    mb->nentries -= p->n;
    p->head = p->tail = NULL;
    p->n = 0;
    return all;
}

/* ---------------------------------------------------------------------------
 * Hash table of records (incremental rehash)
 * ------------------------------------------------------------------------- */

static ErlNifUInt64 pid_hash(ErlNifEnv *env, const ErlNifPid *pid)
{
    return enif_hash(ERL_NIF_INTERNAL_HASH, enif_make_pid(env, pid), MB_PID_SALT);
}

static mb_proc **buckets_new(size_t n)
{
    if (n == 0 || n > SIZE_MAX / sizeof(mb_proc *))
        return NULL;
    mb_proc **b = enif_alloc(n * sizeof(mb_proc *));
    if (b != NULL)
        memset(b, 0, n * sizeof(mb_proc *));
    return b;
}

/* Migrates up to MB_REHASH_STEP buckets of t[0] into t[1]; finishes the growth
 * when t[0] is empty. */
static void tab_step(mailbox *mb)
{
    if (mb->t[1].b == NULL)
        return;
    for (unsigned i = 0; i < MB_REHASH_STEP && mb->rehash_pos <= mb->t[0].mask; i++) {
        mb_proc *p = mb->t[0].b[mb->rehash_pos];
        mb->t[0].b[mb->rehash_pos] = NULL;
        mb->rehash_pos++;
        while (p != NULL) {
            mb_proc *next = p->hnext;
            size_t idx = (size_t)(p->hash & mb->t[1].mask);
            p->hnext = mb->t[1].b[idx];
            mb->t[1].b[idx] = p;
            p = next;
        }
    }
    if (mb->rehash_pos > mb->t[0].mask) {
        enif_free(mb->t[0].b);
        mb->t[0] = mb->t[1];
        mb->t[1].b = NULL;
        mb->t[1].mask = 0;
        mb->rehash_pos = 0;
    }
}

static void tab_maybe_grow(mailbox *mb)
{
    if (mb->t[1].b != NULL || mb->nprocs <= mb->t[0].mask + 1)
        return;
    size_t n = (mb->t[0].mask + 1) * 2;
    mb_proc **b = buckets_new(n);
    if (b == NULL)
        return; /* keep the longer chains; still correct */
    mb->t[1].b = b;
    mb->t[1].mask = n - 1;
    mb->rehash_pos = 0;
}

static mb_proc *tab_find(mailbox *mb, const ErlNifPid *pid, ErlNifUInt64 h)
{
    for (int i = 0; i < 2; i++) {
        const mb_table *t = &mb->t[i];
        if (t->b == NULL)
            continue;
        for (mb_proc *p = t->b[h & t->mask]; p != NULL; p = p->hnext) {
            if (p->hash == h && enif_compare_pids(&p->pid, pid) == 0)
                return p;
        }
    }
    return NULL;
}

static void tab_insert(mailbox *mb, mb_proc *p)
{
    mb_table *t = mb->t[1].b != NULL ? &mb->t[1] : &mb->t[0];
    size_t idx = (size_t)(p->hash & t->mask);
    p->hnext = t->b[idx];
    t->b[idx] = p;
    mb->nprocs++;
    tab_maybe_grow(mb);
}

static void tab_unlink(mailbox *mb, const mb_proc *p)
{
    for (int i = 0; i < 2; i++) {
        mb_table *t = &mb->t[i];
        if (t->b == NULL)
            continue;
        for (mb_proc **pp = &t->b[p->hash & t->mask]; *pp != NULL; pp = &(*pp)->hnext) {
            if (*pp == p) {
                *pp = p->hnext;
                mb->nprocs--;
                return;
            }
        }
    }
}

/* ---------------------------------------------------------------------------
 * Tombstones
 * ------------------------------------------------------------------------- */

static void tomb_unlink(mailbox *mb, mb_proc *p)
{
    if (p->tprev != NULL)
        p->tprev->tnext = p->tnext;
    else
        mb->tomb_head = p->tnext;
    if (p->tnext != NULL)
        p->tnext->tprev = p->tprev;
    else
        mb->tomb_tail = p->tprev;
    p->tprev = p->tnext = NULL;
    mb->ntomb--;
}

/* Makes p (already in the table, no entries, no monitor) the newest tombstone and
 * drops the oldest ones beyond the cap; p itself is freed when the cap is 0. */
static void tomb_push(mailbox *mb, mb_proc *p)
{
    p->exited = 1;
    p->monitored = 0;
    p->tnext = NULL;
    p->tprev = mb->tomb_tail;
    if (mb->tomb_tail != NULL)
        mb->tomb_tail->tnext = p;
    else
        mb->tomb_head = p;
    mb->tomb_tail = p;
    mb->ntomb++;
    while (mb->ntomb > mb->max_tomb) {
        mb_proc *old = mb->tomb_head;
        tomb_unlink(mb, old);
        tab_unlink(mb, old);
        enif_free(old);
    }
}

/* Finds or creates the live record of pid (under the lock). A new record is
 * monitored; a pid found dead is stamped as a tombstone (MB_EXITED). */
static int proc_live(ErlNifEnv *env, mailbox *mb, const ErlNifPid *pid, ErlNifUInt64 h,
                     mb_proc **out)
{
    mb_proc *p = tab_find(mb, pid, h);
    if (p != NULL && !p->exited) {
        *out = p;
        return MB_LIVE;
    }
    if (p != NULL) {
        /* A tombstone. If the pid is alive, the node reused the pid number for a
         * new process: revive the record for it. */
        if (enif_monitor_process(env, mb, pid, &p->mon) != 0)
            return MB_EXITED;
        tomb_unlink(mb, p);
        p->exited = 0;
        p->monitored = 1;
        p->epoch = 0;
        *out = p;
        return MB_LIVE;
    }
    p = enif_alloc(sizeof *p);
    if (p == NULL)
        return MB_NOMEM;
    memset(p, 0, sizeof *p);
    p->pid = *pid;
    p->hash = h;
    if (enif_monitor_process(env, mb, pid, &p->mon) == 0) {
        p->monitored = 1;
        tab_insert(mb, p);
        *out = p;
        return MB_LIVE;
    }
    tab_insert(mb, p);
    tomb_push(mb, p);
    return MB_EXITED;
}

/* ---------------------------------------------------------------------------
 * Resource callbacks
 * ------------------------------------------------------------------------- */

static void mb_dtor(ErlNifEnv *env, void *obj)
{
    mailbox *mb = obj;
    for (int i = 0; i < 2; i++) {
        mb_table *t = &mb->t[i];
        if (t->b == NULL)
            continue;
        for (size_t j = 0; j <= t->mask; j++) {
            mb_proc *p = t->b[j];
            while (p != NULL) {
                mb_proc *next = p->hnext;
                entries_free(p->head);
                enif_free(p);
                p = next;
            }
        }
        enif_free(t->b);
        t->b = NULL;
    }
    if (mb->lock != NULL) {
        enif_mutex_destroy(mb->lock);
        mb->lock = NULL;
    }
}

static void mb_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    mailbox *mb = obj;
    mb_entry *dropped = NULL;
    ErlNifUInt64 h = pid_hash(env, pid);

    enif_mutex_lock(mb->lock);
    tab_step(mb);
    mb_proc *p = tab_find(mb, pid, h);
    /* The record may be gone (forget/2) or belong to a later monitor. */
    if (p != NULL && p->monitored && enif_compare_monitors(&p->mon, mon) == 0) {
        dropped = proc_detach_all(mb, p);
        tomb_push(mb, p);
    }
    enif_mutex_unlock(mb->lock);
    entries_free(dropped);
}

/* ---------------------------------------------------------------------------
 * NIFs
 * ------------------------------------------------------------------------- */

static struct aion_mailbox_priv *priv_of(ErlNifEnv *env)
{
    return aion_priv_of(env)->mailbox;
}

static int get_mailbox(ErlNifEnv *env, ERL_NIF_TERM term, mailbox **out)
{
    void *obj;
    if (!enif_get_resource(env, term, priv_of(env)->rt, &obj))
        return 0;
    *out = obj;
    return 1;
}

/* mailbox_new(MaxTombstones :: non_neg_integer()) -> Mailbox. */
ERL_NIF_TERM aion_nif_mailbox_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    struct aion_mailbox_priv *priv = priv_of(env);
    ErlNifUInt64 max_tomb;
    if (!enif_get_uint64(env, argv[0], &max_tomb))
        return enif_make_badarg(env);

    mailbox *mb = enif_alloc_resource(priv->rt, sizeof *mb);
    if (mb == NULL)
        return enif_raise_exception(env, priv->atom_enomem);
    memset(mb, 0, sizeof *mb);
    mb->max_tomb = max_tomb > SIZE_MAX ? SIZE_MAX : (size_t)max_tomb;
    char name[] = "aion_mailbox";
    mb->lock = enif_mutex_create(name);
    mb->t[0].b = buckets_new(MB_INITIAL_BUCKETS);
    mb->t[0].mask = MB_INITIAL_BUCKETS - 1;
    if (mb->lock == NULL || mb->t[0].b == NULL) {
        enif_release_resource(mb); /* the destructor frees what was made */
        return enif_raise_exception(env, priv->atom_enomem);
    }
    ERL_NIF_TERM term = enif_make_resource(env, mb);
    enif_release_resource(mb);
    return term;
}

/* mailbox_retain(Mailbox, Pid, Correlation, Payload, Marker) -> ok | {error, exited}. */
ERL_NIF_TERM aion_nif_mailbox_retain(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    struct aion_mailbox_priv *priv = priv_of(env);
    mailbox *mb;
    ErlNifPid pid;
    if (!get_mailbox(env, argv[0], &mb) || !enif_get_local_pid(env, argv[1], &pid) ||
        !enif_is_atom(env, argv[4]))
        return enif_make_badarg(env);

    mb_entry *e = entry_new(argv[2], argv[3]);
    if (e == NULL)
        return enif_raise_exception(env, priv->atom_enomem);
    ErlNifUInt64 h = pid_hash(env, &pid);
    mb_entry *old = NULL;
    mb_proc *p = NULL;

    enif_mutex_lock(mb->lock);
    tab_step(mb);
    int st = proc_live(env, mb, &pid, h, &p);
    if (st == MB_LIVE) {
        old = proc_detach(p, e->corr, e->corr_hash);
        if (old == NULL)
            mb->nentries++;
        proc_append(p, e);
        e = NULL;
    }
    enif_mutex_unlock(mb->lock);

    entries_free(old);
    entries_free(e); /* not retained */
    if (st == MB_NOMEM)
        return enif_raise_exception(env, priv->atom_enomem);
    if (st == MB_EXITED)
        return aion_error(env, priv->atom_exited);
    /* Retained before the marker is sent: the woken process finds the entry. A
     * failed send means the process is exiting; its monitor drops the entry. */
    if (!enif_send(env, &pid, NULL, argv[4]))
        return aion_error(env, priv->atom_exited);
    return priv->atom_ok;
}

/* mailbox_take(Mailbox, Pid, Correlation) -> {ok, Payload} | none. */
ERL_NIF_TERM aion_nif_mailbox_take(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    struct aion_mailbox_priv *priv = priv_of(env);
    mailbox *mb;
    ErlNifPid pid;
    if (!get_mailbox(env, argv[0], &mb) || !enif_get_local_pid(env, argv[1], &pid))
        return enif_make_badarg(env);

    ErlNifUInt64 h = pid_hash(env, &pid);
    ErlNifUInt64 ch = enif_hash(ERL_NIF_PHASH2, argv[2], 0);
    mb_entry *e = NULL;

    enif_mutex_lock(mb->lock);
    tab_step(mb);
    mb_proc *p = tab_find(mb, &pid, h);
    if (p != NULL && p->n > 0) {
        e = proc_detach(p, argv[2], ch);
        if (e != NULL)
            mb->nentries--;
    }
    enif_mutex_unlock(mb->lock);

    if (e == NULL)
        return priv->atom_none;
    ERL_NIF_TERM payload = enif_make_copy(env, e->payload);
    entries_free(e);
    return aion_ok(env, payload);
}

/* mailbox_take_all(Mailbox, Pid) -> [{Correlation, Payload}] in retain order. */
ERL_NIF_TERM aion_nif_mailbox_take_all(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    mailbox *mb;
    ErlNifPid pid;
    if (!get_mailbox(env, argv[0], &mb) || !enif_get_local_pid(env, argv[1], &pid))
        return enif_make_badarg(env);

    ErlNifUInt64 h = pid_hash(env, &pid);
    mb_entry *all = NULL;

    enif_mutex_lock(mb->lock);
    tab_step(mb);
    mb_proc *p = tab_find(mb, &pid, h);
    if (p != NULL)
        all = proc_detach_all(mb, p);
    enif_mutex_unlock(mb->lock);

    /* Reverse, then cons from the newest so the list comes out oldest first. */
    mb_entry *rev = NULL;
    while (all != NULL) {
        mb_entry *next = all->next;
        all->next = rev;
        rev = all;
        all = next;
    }
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (mb_entry *e = rev; e != NULL; e = e->next) {
        ERL_NIF_TERM pair = enif_make_tuple2(env, enif_make_copy(env, e->corr),
                                             enif_make_copy(env, e->payload));
        list = enif_make_list_cell(env, pair, list);
    }
    entries_free(rev);
    return list;
}

/* mailbox_bump_epoch(Mailbox, Pid) -> pos_integer(); raises exited for a dead pid. */
ERL_NIF_TERM aion_nif_mailbox_bump_epoch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    struct aion_mailbox_priv *priv = priv_of(env);
    mailbox *mb;
    ErlNifPid pid;
    if (!get_mailbox(env, argv[0], &mb) || !enif_get_local_pid(env, argv[1], &pid))
        return enif_make_badarg(env);

    ErlNifUInt64 h = pid_hash(env, &pid);
    ErlNifUInt64 epoch = 0;
    mb_proc *p = NULL;

    enif_mutex_lock(mb->lock);
    tab_step(mb);
    int st = proc_live(env, mb, &pid, h, &p);
    if (st == MB_LIVE)
        epoch = ++p->epoch;
    enif_mutex_unlock(mb->lock);

    if (st == MB_NOMEM)
        return enif_raise_exception(env, priv->atom_enomem);
    if (st == MB_EXITED)
        return enif_raise_exception(env, priv->atom_exited);
    return enif_make_uint64(env, epoch);
}

/* mailbox_epoch(Mailbox, Pid) -> non_neg_integer() | exited. */
ERL_NIF_TERM aion_nif_mailbox_epoch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    struct aion_mailbox_priv *priv = priv_of(env);
    mailbox *mb;
    ErlNifPid pid;
    if (!get_mailbox(env, argv[0], &mb) || !enif_get_local_pid(env, argv[1], &pid))
        return enif_make_badarg(env);

    ErlNifUInt64 h = pid_hash(env, &pid);
    ErlNifUInt64 epoch = 0;
    int exited = 0;

    enif_mutex_lock(mb->lock);
    const mb_proc *p = tab_find(mb, &pid, h);
    if (p != NULL) {
        epoch = p->epoch;
        exited = p->exited;
    }
    enif_mutex_unlock(mb->lock);

    return exited ? priv->atom_exited : enif_make_uint64(env, epoch);
}

/* mailbox_count(Mailbox) -> non_neg_integer(): retained entries. */
ERL_NIF_TERM aion_nif_mailbox_count(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    mailbox *mb;
    if (!get_mailbox(env, argv[0], &mb))
        return enif_make_badarg(env);
    enif_mutex_lock(mb->lock);
    size_t n = mb->nentries;
    enif_mutex_unlock(mb->lock);
    return enif_make_uint64(env, (ErlNifUInt64)n);
}

/* Removes the record of a pid: any record with its entries, monitor and tombstone
 * (only_idle = 0, forget), or only a live record with nothing retained (only_idle = 1,
 * release: busy when entries are retained; a tombstone stays). */
static ERL_NIF_TERM drop_record(ErlNifEnv *env, const ERL_NIF_TERM argv[], int only_idle)
{
    struct aion_mailbox_priv *priv = priv_of(env);
    mailbox *mb;
    ErlNifPid pid;
    if (!get_mailbox(env, argv[0], &mb) || !enif_get_local_pid(env, argv[1], &pid))
        return enif_make_badarg(env);

    ErlNifUInt64 h = pid_hash(env, &pid);
    mb_proc *p;
    int busy = 0;

    enif_mutex_lock(mb->lock);
    tab_step(mb);
    p = tab_find(mb, &pid, h);
    if (p != NULL && only_idle && (p->exited || p->n > 0)) {
        busy = p->n > 0;
        p = NULL;
    }
    if (p != NULL) {
        tab_unlink(mb, p);
        if (p->exited)
            tomb_unlink(mb, p);
        mb->nentries -= p->n;
    }
    enif_mutex_unlock(mb->lock);

    if (p != NULL) {
        /* A down callback racing this finds no record (or a later monitor). */
        if (p->monitored)
            (void)enif_demonitor_process(env, mb, &p->mon);
        entries_free(p->head);
        enif_free(p);
    }
    return busy ? priv->atom_busy : priv->atom_ok;
}

/* mailbox_forget(Mailbox, Pid) -> ok: drops the record (entries, monitor, tombstone). */
ERL_NIF_TERM aion_nif_mailbox_forget(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return drop_record(env, argv, 0);
}

/* mailbox_release(Mailbox, Pid) -> ok | busy: drops the live record of a pid that
 * has no retained entries, with its monitor (a long-idle process gives back ~300
 * bytes; its epoch reads 0 until it bumps again). busy: entries are retained (the
 * marker is on its way); nothing changes. No record, or a tombstone: ok. */
ERL_NIF_TERM aion_nif_mailbox_release(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return drop_record(env, argv, 1);
}

/* ---------------------------------------------------------------------------
 * Load / unload
 * ------------------------------------------------------------------------- */

int aion_mailbox_load(ErlNifEnv *env, struct aion_mailbox_priv **out)
{
    struct aion_mailbox_priv *p = enif_alloc(sizeof *p);
    if (p == NULL)
        return 1;
    ErlNifResourceTypeInit init = {.dtor = mb_dtor, .stop = NULL, .down = mb_down};
    p->rt = enif_open_resource_type_x(env, "aion_mailbox", &init,
                                      ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    if (p->rt == NULL) {
        enif_free(p);
        return 1;
    }
    p->atom_ok = enif_make_atom(env, "ok");
    p->atom_exited = enif_make_atom(env, "exited");
    p->atom_none = enif_make_atom(env, "none");
    p->atom_enomem = enif_make_atom(env, "enomem");
    p->atom_busy = enif_make_atom(env, "busy");
    *out = p;
    return 0;
}

void aion_mailbox_unload(struct aion_mailbox_priv *priv)
{
    enif_free(priv);
}
