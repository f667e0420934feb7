-- Several API replicas share one database (issue 7). A replica that is about to change a sandbox's state on its
-- node (timeout kill, auto-pause, resume) first claims the row with a conditional UPDATE; only the replica whose
-- UPDATE changed the row acts. The claim is a lease: a replica that dies mid-operation holds it only until
-- `claim_until` (unix ms), then another replica may retry. A state transition or delete ends the claim.
ALTER TABLE sandboxes ADD COLUMN claimed_by TEXT;
ALTER TABLE sandboxes ADD COLUMN claim_until BIGINT;
