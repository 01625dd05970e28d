/// The PostgreSQL triggers that announce committed changes to every controller on the database (schema version 11).
///
/// A change used to be announced by the controller that made it, after its commit: a controller killed between the
/// two, or whose three sends failed, left the others serving what they had cached — a revoked token kept working on
/// them, a release or a trust root reached their parked agents only at the agents' next poll timeout — and a change
/// written by anything else (the CLI on the database, an operator's `psql`) was never announced at all. Here the
/// transaction that writes a row sends the `NOTIFY`: PostgreSQL delivers it when, and only when, the transaction
/// commits, so no committed change goes unannounced and no rolled-back one is announced.
///
/// Each notification names its controller (`ferry.origin`, a start-up setting of the pool's connections; `database`
/// for writers without one) so that controller ignores its own, as it always did. Identical notifications within one
/// transaction are delivered once (PostgreSQL's rule): a publish, which stores a release and its rollout, announces
/// `release SERVICE` once. The payloads are `ClusterChange`'s.
///
/// Only what changes a cached desired state or a cached principal fires: an agent's status write (its `last_seen`,
/// versions, hostnames) or a token's use count does not.
///
/// Part of a released migration: never edit these, add a migration instead.
enum ClusterChangeTriggers {
    static let statements: [String] = [
        """
        CREATE FUNCTION ferry_announce(kind TEXT, argument TEXT) RETURNS VOID LANGUAGE SQL SET search_path FROM CURRENT AS $$
            SELECT pg_notify('ferry_changes',
                concat_ws(' ', 'v1', COALESCE(NULLIF(current_setting('ferry.origin', TRUE), ''), 'database'), kind, argument))
        $$
        """,
        // A row that announces one kind: TG_ARGV[0] is the kind; TG_ARGV[1], when given, the new row's column that is its
        // argument.
        """
        CREATE FUNCTION ferry_row_changed() RETURNS TRIGGER LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
        BEGIN
            PERFORM ferry_announce(TG_ARGV[0], CASE WHEN TG_NARGS > 1 THEN to_jsonb(NEW) ->> TG_ARGV[1] END);
            RETURN NULL;
        END
        $$
        """,
        // A release stored or approved; a rollout stored with its release announces as the release does.
        "CREATE TRIGGER ferry_release_stored AFTER INSERT ON releases FOR EACH ROW EXECUTE FUNCTION ferry_row_changed('release', 'service')",
        """
        CREATE TRIGGER ferry_release_approved AFTER UPDATE ON releases FOR EACH ROW
            WHEN (OLD.envelope IS DISTINCT FROM NEW.envelope OR OLD.signed_by IS DISTINCT FROM NEW.signed_by
                OR OLD.signatures_required IS DISTINCT FROM NEW.signatures_required)
            EXECUTE FUNCTION ferry_row_changed('release', 'service')
        """,
        "CREATE TRIGGER ferry_rollout_stored AFTER INSERT ON rollouts FOR EACH ROW EXECUTE FUNCTION ferry_row_changed('release', 'service')",
        """
        CREATE TRIGGER ferry_rollout_changed AFTER UPDATE ON rollouts FOR EACH ROW
            WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.current_wave IS DISTINCT FROM NEW.current_wave
                OR OLD.stable_serial IS DISTINCT FROM NEW.stable_serial OR OLD.agent_order IS DISTINCT FROM NEW.agent_order)
            EXECUTE FUNCTION ferry_row_changed('rollout', 'service')
        """,
        // An agent enrolled, removed, or re-enrolled (a new token: the old one stopped working).
        """
        CREATE FUNCTION ferry_agent_changed() RETURNS TRIGGER LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                PERFORM ferry_announce('agent', NEW.id);
                RETURN NULL;
            END IF;
            PERFORM ferry_announce('agent', OLD.id);
            IF TG_OP = 'DELETE' OR OLD.token_hash IS DISTINCT FROM NEW.token_hash THEN
                PERFORM ferry_announce('revoked', NULL);
            END IF;
            IF TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id THEN
                PERFORM ferry_announce('agent', NEW.id);
            END IF;
            RETURN NULL;
        END
        $$
        """,
        "CREATE TRIGGER ferry_agent_stored AFTER INSERT OR DELETE ON agents FOR EACH ROW EXECUTE FUNCTION ferry_agent_changed()",
        """
        CREATE TRIGGER ferry_agent_changed AFTER UPDATE ON agents FOR EACH ROW
            WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.token_hash IS DISTINCT FROM NEW.token_hash
                OR OLD.services IS DISTINCT FROM NEW.services OR OLD.name IS DISTINCT FROM NEW.name)
            EXECUTE FUNCTION ferry_agent_changed()
        """,
        // A token revoked, deleted, or changed in what it may do.
        "CREATE TRIGGER ferry_token_deleted AFTER DELETE ON tokens FOR EACH ROW EXECUTE FUNCTION ferry_row_changed('revoked')",
        """
        CREATE TRIGGER ferry_token_changed AFTER UPDATE ON tokens FOR EACH ROW
            WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
                OR OLD.hash IS DISTINCT FROM NEW.hash OR OLD.role IS DISTINCT FROM NEW.role
                OR OLD.services IS DISTINCT FROM NEW.services)
            EXECUTE FUNCTION ferry_row_changed('revoked')
        """,
        // A trust root published: every desired state names it.
        "CREATE TRIGGER ferry_root_published AFTER INSERT ON trust_roots FOR EACH ROW EXECUTE FUNCTION ferry_row_changed('root')",
    ]

    /// Drops the functions and, with them, the triggers (tests that take a database back to an older version).
    static let dropStatement = """
        DROP FUNCTION ferry_announce, ferry_row_changed, ferry_agent_changed CASCADE
        """
}
