-- Terarchitect schema (SQLite, the embedded default). Same tables and columns as the PostgreSQL
-- schema; UUIDs are 16-byte BLOBs, timestamps RFC 3339 text in UTC, JSON columns text.

CREATE TABLE projects (
    id             BLOB PRIMARY KEY NOT NULL,
    name           TEXT NOT NULL,
    description    TEXT,
    project_path   TEXT,
    github_url     TEXT,
    execution_mode TEXT NOT NULL DEFAULT 'docker' CHECK (execution_mode IN ('docker', 'local')),
    revision       INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE graphs (
    id         BLOB PRIMARY KEY NOT NULL,
    project_id BLOB NOT NULL UNIQUE REFERENCES projects (id) ON DELETE CASCADE,
    nodes      TEXT NOT NULL DEFAULT '[]',
    edges      TEXT NOT NULL DEFAULT '[]',
    version    INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE kanban_boards (
    id         BLOB PRIMARY KEY NOT NULL,
    project_id BLOB NOT NULL UNIQUE REFERENCES projects (id) ON DELETE CASCADE,
    columns    TEXT NOT NULL DEFAULT '[{"id": "backlog", "title": "Backlog", "order": 0}]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE tickets (
    id                  BLOB PRIMARY KEY NOT NULL,
    project_id          BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    column_id           TEXT NOT NULL,
    title               TEXT NOT NULL,
    description         TEXT,
    associated_node_ids TEXT DEFAULT '[]',
    associated_edge_ids TEXT DEFAULT '[]',
    priority            TEXT DEFAULT 'medium',
    status              TEXT DEFAULT 'todo',
    cancel_requested    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX tickets_project_column ON tickets (project_id, column_id, updated_at DESC);

CREATE TABLE notes (
    id         BLOB PRIMARY KEY NOT NULL,
    project_id BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    node_id    TEXT,
    edge_id    TEXT,
    title      TEXT,
    content    TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX notes_project ON notes (project_id, created_at);

CREATE TABLE execution_logs (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            BLOB NOT NULL UNIQUE,
    project_id    BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    ticket_id     BLOB REFERENCES tickets (id) ON DELETE CASCADE,
    session_id    TEXT,
    step          TEXT,
    summary       TEXT,
    raw_output    TEXT,
    input_tokens  INTEGER,
    output_tokens INTEGER,
    success       BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TEXT NOT NULL
);
CREATE INDEX execution_logs_ticket ON execution_logs (ticket_id, created_at, seq);

CREATE TABLE prs (
    id          BLOB PRIMARY KEY NOT NULL,
    project_id  BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    ticket_id   BLOB NOT NULL UNIQUE REFERENCES tickets (id) ON DELETE CASCADE,
    pr_number   INTEGER,
    pr_url      TEXT,
    commit_hash TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE pr_review_comments (
    id                 BLOB PRIMARY KEY NOT NULL,
    project_id         BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    ticket_id          BLOB REFERENCES tickets (id) ON DELETE SET NULL,
    pr_number          INTEGER NOT NULL,
    github_comment_id  INTEGER NOT NULL,
    author_login       TEXT,
    body               TEXT,
    comment_created_at TEXT,
    addressed_at       TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (project_id, pr_number, github_comment_id)
);
CREATE INDEX pr_review_comments_open ON pr_review_comments (project_id, pr_number, addressed_at);

CREATE TABLE app_settings (
    id         BLOB PRIMARY KEY NOT NULL,
    key        TEXT NOT NULL UNIQUE,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE agent_jobs (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                BLOB NOT NULL UNIQUE,
    ticket_id         BLOB NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    project_id        BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    kind              TEXT NOT NULL CHECK (kind IN ('ticket', 'review')),
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    pr_number         INTEGER,
    comment_body      TEXT,
    github_comment_id INTEGER,
    updated_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    attempt           INTEGER NOT NULL DEFAULT 0,
    claimed_at        TEXT,
    lease_seconds     INTEGER,
    lease_expires_at  TEXT,
    finished_at       TEXT,
    fail_reason       TEXT,
    fail_message      TEXT,
    CHECK (kind <> 'review' OR pr_number IS NOT NULL)
);
CREATE UNIQUE INDEX agent_jobs_one_active_per_ticket ON agent_jobs (ticket_id)
    WHERE status IN ('pending', 'running');
CREATE INDEX agent_jobs_pending ON agent_jobs (created_at, seq) WHERE status = 'pending';
CREATE INDEX agent_jobs_pending_by_project ON agent_jobs (project_id, created_at, seq) WHERE status = 'pending';
CREATE INDEX agent_jobs_leases ON agent_jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX agent_jobs_ticket ON agent_jobs (ticket_id);

CREATE TABLE memory_docs (
    id              BLOB PRIMARY KEY NOT NULL,
    project_id      BLOB NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    content         TEXT NOT NULL,
    content_hash    TEXT NOT NULL,
    length          INTEGER NOT NULL,
    embedding       BLOB,
    embedding_model TEXT,
    created_at      TEXT NOT NULL,
    UNIQUE (project_id, content_hash)
);

CREATE TABLE memory_terms (
    project_id BLOB NOT NULL,
    term       TEXT NOT NULL,
    doc_id     BLOB NOT NULL REFERENCES memory_docs (id) ON DELETE CASCADE,
    tf         INTEGER NOT NULL,
    PRIMARY KEY (project_id, term, doc_id)
);
CREATE INDEX memory_terms_doc ON memory_terms (doc_id);
