-- Run credentials (addition): each claim mints a run token for the claimed attempt. Only the
-- token's SHA-256 (lower-case hex) is stored; a re-claim replaces it, so an older attempt's
-- token no longer matches any row.
ALTER TABLE agent_jobs ADD COLUMN run_token_hash TEXT;
ALTER TABLE agent_jobs ADD COLUMN run_token_attempt INTEGER;
CREATE UNIQUE INDEX agent_jobs_run_token ON agent_jobs (run_token_hash)
    WHERE run_token_hash IS NOT NULL;
