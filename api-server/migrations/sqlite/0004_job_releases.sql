-- Job release (addition): a claimer that could not start a run (e.g. its pod never found room in
-- the cluster) gives the job back. `releases` counts those claims; they do not count against
-- max-attempts (a lease runs out for good after `attempt - releases` claims), while `attempt`
-- keeps growing so a stale claimer's attempt guard never matches a later claim.
ALTER TABLE agent_jobs ADD COLUMN releases INTEGER NOT NULL DEFAULT 0;
