-- The review loop (addition): GitHub webhook deliveries already processed (idempotent
-- redeliveries; rows older than the retention are pruned), and named leases so at most one
-- api-server replica runs a background loop (the PR poller) at a time.
CREATE TABLE github_webhook_deliveries (
    delivery_id VARCHAR(100) PRIMARY KEY,
    event       VARCHAR(100) NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX github_webhook_deliveries_received ON github_webhook_deliveries (received_at);

CREATE TABLE background_leases (
    name       VARCHAR(100) PRIMARY KEY,
    holder     VARCHAR(255) NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- The poller and the webhook look up pull requests by number.
CREATE INDEX prs_number ON prs (pr_number);
