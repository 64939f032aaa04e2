-- A transaction left open ends after 10 s idle: ours last milliseconds, and one left open by a
-- process that froze (SIGSTOP, a stalled VM) would hold its row locks while every worker queued
-- behind them.
--
-- Where the setting lives. The pool sent it as a startup parameter, and PgBouncer refuses a
-- connection over any parameter it does not know (ignore_startup_parameters would drop it
-- silently). A SET after connecting stays with whichever server connection a transaction pooler
-- ran it on, and SET LOCAL costs a round trip in every transaction. ALTER DATABASE needs the
-- database's owner and reaches every role, an admin's psql too. A default of the role in this
-- database is read by every session Postgres starts for it, whoever opens it: our own pools, or
-- the server connections of a pooler (then current_user is the role the pooler logs in as, the
-- one to set). Any role may set its own defaults; it takes effect for sessions started after
-- this (the release phase runs before the new web and worker processes start), and it also
-- applies to someone's psql session as the same role in this database.
--
-- Where a managed service refuses (insufficient privilege) the migration warns and goes on: the
-- service works without the setting, only without this guard. Set it as an admin then, with
-- the statement the warning shows, or set PgBouncer's idle_transaction_timeout.
DO $$
DECLARE
    alter_role text := format(
        'ALTER ROLE %I IN DATABASE %I SET idle_in_transaction_session_timeout = %L',
        current_user, current_database(), '10s');
BEGIN
    EXECUTE alter_role;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'longtask: idle_in_transaction_session_timeout is not set (%); as an admin: %',
        SQLERRM, alter_role;
END $$;
