// What SQLite alone costs for the writes of Flock's durable path, without Flock: no HTTP, no
// Rust, no sqlx, no JSON on our side. docs/benchmarks.md quotes its figures ("SQLite's own
// floor").
//
// It opens a fresh database with the SQLite store's pragmas and schema, then writes what
// publishing and delivering at once writes, in batches of 16: each batch inserts 16 artifacts
// (1,024-byte payloads) and their 16 deliveries (1,330-byte bodies, leased), records the first
// attempt of the previous batch's 16 deliveries (an attempt row, and the delivery marked
// delivered with its body, secret and headers cleared), and commits.
//
//   native   each row bound to a prepared statement (the cheapest way SQLite can be driven)
//   minimal  the same without the attempt rows, on a schema without four of its indexes
//            (give it such a schema: see below)
//   json     the store's own batch text (the argument after the schema), its rows given as
//            JSON arrays of positional rows, as the server gives them
//   single   one publish per transaction, alternately with and without its delivery
//            (the publish latency's share of the database)
//
// Build it against the SQLite that the store links (libsqlite3-sys bundles the amalgamation;
// the server's is 3.46.0):
//
//   A=$(ls -d ~/.cargo/registry/src/*/libsqlite3-sys-0.30.1/sqlite3)
//   gcc -O2 -I"$A" -o sqlite_floor docs/measurements/sqlite_floor.c "$A/sqlite3.c" -lpthread -ldl -lm
//   cat crates/flock-store/migrations/sqlite/*.sql > schema.sql
//   ./sqlite_floor native /tmp/floor.db schema.sql 4000
//   ./sqlite_floor single /tmp/floor.db schema.sql 20000
//
// For `minimal`, the schema without `artifacts_by_type`, `artifacts_by_tenant`,
// `deliveries_by_correlation` and `deliveries_completed`:
//
//   grep -v -e 'INDEX artifacts_by_type' -e 'INDEX artifacts_by_tenant'
//     -e 'INDEX deliveries_by_correlation' -e 'INDEX deliveries_completed' schema.sql > minimal.sql
//
// (one line).
//
// For `json`, the batch text as the writer runs it (`BATCH_ALONE` in
// crates/flock-store/src/sqlite/write.rs: `PARK` goes before the claim), on one line:
//
//   python3 - <<'PY' > batch.sql
//   import re
//   s = open("crates/flock-store/src/sqlite/write.rs").read()
//   c = lambda n: re.sub(r'\\\n\s*', '', re.search('const ' + n + r': &str = "(.*?)";\n', s, re.S).group(1))
//   b, p = c("BATCH"), c("PARK"); i = b.index("SELECT 2 AS kind")
//   print("BEGIN IMMEDIATE; " + b[:i] + p + "; " + b[i:] + " COMMIT;")
//   PY
//   ./sqlite_floor json /tmp/floor.db schema.sql 4000 batch.sql
//
// The machine is noisy: run the modes to compare one after the other, several times.
#include "sqlite3.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PER_BATCH 16
#define PAYLOAD 1024
#define BODY 1330

static sqlite3 *db;

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *text = malloc(n + 1);
    if (fread(text, 1, n, f) != (size_t)n) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
    text[n] = 0;
    fclose(f);
    return text;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* A UUIDv7-shaped id: the time in milliseconds, then a counter, so ids grow as Flock's do. */
static unsigned long long counter;
static void new_id(unsigned char id[16], long long ms) {
    counter++;
    for (int i = 0; i < 6; i++) id[i] = (ms >> (40 - 8 * i)) & 0xff;
    id[6] = 0x70 | ((counter >> 8) & 0x0f);
    id[7] = counter & 0xff;
    id[8] = 0x80;
    for (int i = 0; i < 7; i++) id[9 + i] = ((counter * 2654435761ULL) >> (8 * i)) & 0xff;
}

static void hex_id(char out[37], const unsigned char id[16]) {
    static const char *digits = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = digits[id[i] >> 4];
        out[o++] = digits[id[i] & 15];
    }
    out[o] = 0;
}

static sqlite3_stmt *prepare(const char *sql, const char **tail) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, tail) != SQLITE_OK) {
        fprintf(stderr, "prepare: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
    return st;
}

static void run(sqlite3_stmt *st) {
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {}
    if (rc != SQLITE_DONE) { fprintf(stderr, "step: %s\n", sqlite3_errmsg(db)); exit(1); }
    sqlite3_reset(st);
}

static void open_fresh(const char *path, const char *schema) {
    unlink(path);
    char wal[4096];
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(wal);
    if (sqlite3_open(path, &db) != SQLITE_OK) { fprintf(stderr, "open %s\n", path); exit(1); }
    char *err = NULL;
    /* The store's pragmas for its writer (crates/flock-store/src/sqlite/open.rs). */
    const char *pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                          "PRAGMA temp_store=memory; PRAGMA cache_size=-16384; "
                          "PRAGMA wal_autocheckpoint=16384;";
    if (sqlite3_exec(db, pragmas, 0, 0, &err) || sqlite3_exec(db, slurp(schema), 0, 0, &err)) {
        fprintf(stderr, "schema: %s\n", err);
        exit(1);
    }
}

static char payload[PAYLOAD + 1], body[BODY];
static const char *url = "http://127.0.0.1:40000/hook";
static const char *secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

static const char *INSERT_ARTIFACT =
    "INSERT INTO artifacts (id, type_name, payload, produced_by, correlation_id, tenant, tags, "
    "created_at) VALUES (?1, 'Bench', ?2, 'external', ?3, 'default', '[]', ?4)";
static const char *INSERT_DELIVERY =
    "INSERT INTO deliveries (id, correlation_id, tenant, artifact_id, sequence, url, secret, "
    "body, artifact_created_at, state, due_at, created_at, lease_token) VALUES (?1, ?2, "
    "'default', ?3, 1, ?8, ?9, ?4, ?5, 'pending', ?6, ?5, ?7)";
static const char *INSERT_ATTEMPT =
    "INSERT INTO attempts (delivery_id, number, started_at, status_code, duration_ms) "
    "SELECT id, 1, ?2, 200, 1 FROM deliveries WHERE id = ?1 AND lease_token = ?3 "
    "AND state = 'pending'";
static const char *MARK_DELIVERED =
    "UPDATE deliveries SET attempts = attempts + 1, lease_token = NULL, state = 'delivered', "
    "due_at = NULL, completed_at = ?2, body = NULL, secret = NULL, headers = NULL "
    "WHERE id = ?1 AND lease_token = ?3 AND state = 'pending'";

static sqlite3_stmt *begin, *commit, *artifact, *delivery, *attempt, *delivered;

static void prepare_rows(void) {
    begin = prepare("BEGIN IMMEDIATE", NULL);
    commit = prepare("COMMIT", NULL);
    artifact = prepare(INSERT_ARTIFACT, NULL);
    delivery = prepare(INSERT_DELIVERY, NULL);
    attempt = prepare(INSERT_ATTEMPT, NULL);
    delivered = prepare(MARK_DELIVERED, NULL);
}

static void publish(const unsigned char *aid, const unsigned char *cid, const unsigned char *did,
                    long long us) {
    sqlite3_bind_blob(artifact, 1, aid, 16, SQLITE_STATIC);
    sqlite3_bind_text(artifact, 2, payload, PAYLOAD, SQLITE_STATIC);
    sqlite3_bind_blob(artifact, 3, cid, 16, SQLITE_STATIC);
    sqlite3_bind_int64(artifact, 4, us);
    run(artifact);
    if (!did) return;
    sqlite3_bind_blob(delivery, 1, did, 16, SQLITE_STATIC);
    sqlite3_bind_blob(delivery, 2, cid, 16, SQLITE_STATIC);
    sqlite3_bind_blob(delivery, 3, aid, 16, SQLITE_STATIC);
    sqlite3_bind_blob(delivery, 4, body, BODY, SQLITE_STATIC);
    sqlite3_bind_int64(delivery, 5, us);
    sqlite3_bind_int64(delivery, 6, us + 30000000);
    sqlite3_bind_int64(delivery, 7, 1);
    sqlite3_bind_text(delivery, 8, url, -1, SQLITE_STATIC);
    sqlite3_bind_text(delivery, 9, secret, -1, SQLITE_STATIC);
    run(delivery);
}

static void record(const unsigned char *did, long long us, int with_attempt) {
    if (with_attempt) {
        sqlite3_bind_blob(attempt, 1, did, 16, SQLITE_STATIC);
        sqlite3_bind_int64(attempt, 2, us);
        sqlite3_bind_int64(attempt, 3, 1);
        run(attempt);
    }
    sqlite3_bind_blob(delivered, 1, did, 16, SQLITE_STATIC);
    sqlite3_bind_int64(delivered, 2, us);
    sqlite3_bind_int64(delivered, 3, 1);
    run(delivered);
}

/* The server's batch: every statement of the text, its rows as JSON, its bodies as one blob. */
static sqlite3_stmt *json_batch[32];
static int json_statements;
static char artifacts_json[PER_BATCH * 400], deliveries_json[PER_BATCH * 500],
    records_json[PER_BATCH * 400], bodies[PER_BATCH * (PAYLOAD + BODY)];

static void json_write(unsigned char ids[][3][16], unsigned char previous[][16], int have_previous,
                       long long us) {
    char *a = artifacts_json, *d = deliveries_json, *r = records_json;
    int at = 1;
    a += sprintf(a, "[");
    d += sprintf(d, "[");
    r += sprintf(r, "[");
    for (int i = 0; i < PER_BATCH; i++) {
        char aid[37], cid[37], did[37], prev[37];
        hex_id(aid, ids[i][0]);
        hex_id(cid, ids[i][1]);
        hex_id(did, ids[i][2]);
        memcpy(bodies + at - 1, payload, PAYLOAD);
        a += sprintf(a, "%s[\"%s\",\"Bench\",%d,%d,\"external\",\"%s\",\"default\",\"[]\",%lld]",
                     i ? "," : "", aid, at, PAYLOAD, cid, us);
        at += PAYLOAD;
        memcpy(bodies + at - 1, body, BODY);
        d += sprintf(d, "%s[\"%s\",\"%s\",\"default\",\"%s\",1,\"%s\",\"%s\",%d,%d,%lld,true]",
                     i ? "," : "", did, cid, aid, url, secret, at, BODY, us);
        at += BODY;
        if (have_previous) {
            hex_id(prev, previous[i]);
            r += sprintf(r, "%s[\"%s\",1,\"delivered\",null,null,%lld,1,%lld,200,null,null,1]",
                         i ? "," : "", prev, us, us);
        }
    }
    strcpy(a, "]");
    strcpy(d, "]");
    strcpy(r, "]");
    for (int s = 0; s < json_statements; s++) {
        sqlite3_stmt *st = json_batch[s];
        for (int k = 1; k <= sqlite3_bind_parameter_count(st); k++) {
            switch (atoi(sqlite3_bind_parameter_name(st, k) + 1)) {
            case 1: sqlite3_bind_text(st, k, artifacts_json, -1, SQLITE_STATIC); break;
            case 2: sqlite3_bind_blob(st, k, bodies, at - 1, SQLITE_STATIC); break;
            case 3: case 6: sqlite3_bind_int64(st, k, us); break;
            case 4: sqlite3_bind_text(st, k, deliveries_json, -1, SQLITE_STATIC); break;
            case 5: sqlite3_bind_text(st, k, records_json, -1, SQLITE_STATIC); break;
            case 7: sqlite3_bind_int64(st, k, PER_BATCH); break;
            case 8: sqlite3_bind_int64(st, k, 2); break;
            case 9: case 14: sqlite3_bind_int64(st, k, us + 30000000); break;
            case 10: sqlite3_bind_text(st, k, "[]", -1, SQLITE_STATIC); break;
            case 11: sqlite3_bind_int64(st, k, 0); break;
            case 12: sqlite3_bind_null(st, k); break;
            case 13: sqlite3_bind_int64(st, k, 1); break;
            case 15: sqlite3_bind_int64(st, k, have_previous ? PER_BATCH : 0); break;
            }
        }
        run(st);
    }
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s native|minimal|json|single DB SCHEMA COUNT [BATCH_SQL]\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    int count = atoi(argv[4]);
    memset(payload, 'p', PAYLOAD);
    memset(body, 'b', BODY);
    open_fresh(argv[2], argv[3]);
    prepare_rows();

    if (strcmp(mode, "single") == 0) {
        double *with = malloc(count * sizeof(double)), *without = malloc(count * sizeof(double));
        for (int i = 0; i < 2 * count; i++) {
            int has_delivery = (i & 1) ^ ((i >> 1) & 1); /* both orders, in turn */
            long long us = 1764660000000000LL + i * 1000LL;
            unsigned char aid[16], cid[16], did[16];
            new_id(aid, us / 1000);
            new_id(cid, us / 1000);
            new_id(did, us / 1000);
            double started = now();
            run(begin);
            publish(aid, cid, has_delivery ? did : NULL, us);
            run(commit);
            double took = (now() - started) * 1e6;
            if (has_delivery) with[i / 2] = took; else without[i / 2] = took;
        }
        qsort(with, count, sizeof(double), by_value);
        qsort(without, count, sizeof(double), by_value);
        printf("single: %d transactions of each kind: an artifact with its delivery p50 %.1f us, "
               "without %.1f us; the delivery %.1f us\n",
               count, with[count / 2], without[count / 2], with[count / 2] - without[count / 2]);
        return 0;
    }

    int json = strcmp(mode, "json") == 0, minimal = strcmp(mode, "minimal") == 0;
    if (!json && !minimal && strcmp(mode, "native") != 0) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    if (json) {
        if (argc < 6) { fprintf(stderr, "json needs the batch text\n"); return 2; }
        const char *tail = slurp(argv[5]);
        while (*tail) {
            sqlite3_stmt *st = prepare(tail, &tail);
            if (st) json_batch[json_statements++] = st;
            while (*tail == ' ' || *tail == '\n' || *tail == ';') tail++;
        }
    }
    unsigned char ids[PER_BATCH][3][16], previous[PER_BATCH][16];
    int have_previous = 0;
    double started = now(), committing = 0;
    for (int b = 0; b < count; b++) {
        long long us = 1764660000000000LL + b * 1000LL;
        for (int i = 0; i < PER_BATCH; i++)
            for (int k = 0; k < 3; k++) new_id(ids[i][k], us / 1000);
        if (json) {
            json_write(ids, previous, have_previous, us);
        } else {
            run(begin);
            for (int i = 0; i < PER_BATCH; i++) publish(ids[i][0], ids[i][1], ids[i][2], us);
            if (have_previous)
                for (int i = 0; i < PER_BATCH; i++) record(previous[i], us, !minimal);
            double at = now();
            run(commit);
            committing += now() - at;
        }
        for (int i = 0; i < PER_BATCH; i++) memcpy(previous[i], ids[i][2], 16);
        have_previous = 1;
    }
    double took = now() - started;
    sqlite3_stmt *check = prepare("SELECT (SELECT count(*) FROM artifacts), (SELECT count(*) FROM "
                                  "deliveries WHERE state = 'delivered')", NULL);
    sqlite3_step(check);
    printf("%s: %d batches of %d: %.1f us per batch, %.1f us per delivery", mode, count,
           PER_BATCH, took / count * 1e6, took / count / PER_BATCH * 1e6);
    if (!json) printf(" (the commit %.1f us per batch)", committing / count * 1e6);
    printf("; %d artifacts, %d delivered\n", sqlite3_column_int(check, 0),
           sqlite3_column_int(check, 1));
    return 0;
}
