-- handler.sql: the twin of evpipe._deliver_function(destination, event)
-- (src/handler.c). The C runs a function destination's handler as the
-- destination's owner by switching the user id in the server. PL/pgSQL cannot:
-- SET ROLE is refused inside a SECURITY DEFINER function, and the caller
-- (evpiped's login, a member of evpipe_worker) is no member of the owner. The
-- only way SQL has to run code as another role is a SECURITY DEFINER function
-- that role owns. So the managed install keeps one entry point per role that
-- owns a function destination:
--
--   evpipe._handler_as_<role oid>(handler_schema text, handler_name text,
--                                  event jsonb, path text) RETURNS void
--
-- SECURITY DEFINER, owned by that role, executable only by it and by the owner
-- of evpipe._deliver_function. It calls handler_schema.handler_name(event)
-- with search_path = path, nothing else. evpipe._sync_handler_owners() creates
-- and drops them so that they match the owners of function destinations; the
-- config_changed trigger on evpipe.destinations (evpipe._config_changed) runs
-- it after every change of the table, as the role making the change (the
-- install's owner, inside create_destination, alter_destination and
-- drop_destination). Giving a function to another role needs, without
-- superuser, membership in that role and its CREATE privilege on the schema:
-- the owner (a database owner with CREATEROLE) grants both to itself and the
-- role for the moment of the change, inside the transaction, and revokes them
-- before it ends, so no other session ever sees them. A role it cannot act for
-- gets no entry point: the deliveries of its destinations answer so (42501),
-- but for a superuser's (the install's owner is none): those run as the
-- install's owner, with less than their owner's rights.

-- The entry point of a role: a function in schema evpipe owned by it.
CREATE OR REPLACE FUNCTION evpipe._handler_entry(role_oid oid)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN '_handler_as_' || role_oid::text;
END
$$;
COMMENT ON FUNCTION evpipe._handler_entry(oid) IS
	'Internal (managed install): the name of the entry point that runs function destination handlers as a role';

-- Create the entry points the owners of function destinations need and drop the others (after a change of evpipe.destinations).
CREATE OR REPLACE FUNCTION evpipe._sync_handler_owners()
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	me name := current_user;
	super boolean;
	definer name;
	r record;
	f text;
	as_member boolean;
	as_creator boolean;
BEGIN
	-- one change at a time: two sessions must not create one entry point twice
	PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('evpipe.handler_owners'));
	SELECT ro.rolsuper INTO super FROM pg_catalog.pg_roles ro WHERE ro.rolname = me;
	SELECT pg_catalog.pg_get_userbyid(p.proowner) INTO definer FROM pg_catalog.pg_proc p
		WHERE p.oid = 'evpipe._deliver_function(text, jsonb)'::pg_catalog.regprocedure;
	-- entry points no destination needs (dropped, altered by another role, or
	-- handed to another role by REASSIGN OWNED)
	FOR r IN SELECT p.oid::pg_catalog.regprocedure::text AS f, p.proowner, pg_catalog.pg_get_userbyid(p.proowner) AS owner
		FROM pg_catalog.pg_proc p
		WHERE p.pronamespace = 'evpipe'::pg_catalog.regnamespace AND p.proname ~ '^_handler_as_[0-9]+$'
			AND NOT EXISTS (SELECT 1 FROM evpipe.destinations d JOIN pg_catalog.pg_roles ro ON ro.rolname = d.owner
				WHERE d.kind = 'function' AND ro.oid = p.proowner AND p.proname = evpipe._handler_entry(ro.oid))
	LOOP
		BEGIN
			as_member := NOT super AND NOT pg_catalog.pg_has_role(me, r.proowner, 'MEMBER');
			IF as_member THEN
				EXECUTE pg_catalog.format('GRANT %I TO %I', r.owner, me);
			END IF;
			EXECUTE 'DROP FUNCTION ' || r.f;
			IF as_member THEN
				EXECUTE pg_catalog.format('REVOKE %I FROM %I', r.owner, me);
			END IF;
		EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
			RAISE LOG 'evpipe: cannot drop %: %', r.f, SQLERRM;
		END;
	END LOOP;
	-- an entry point for each role owning a function destination
	FOR r IN SELECT DISTINCT ro.oid, ro.rolname FROM evpipe.destinations d
		JOIN pg_catalog.pg_roles ro ON ro.rolname = d.owner
		WHERE d.kind = 'function' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
			WHERE p.pronamespace = 'evpipe'::pg_catalog.regnamespace AND p.proname = evpipe._handler_entry(ro.oid))
	LOOP
		f := pg_catalog.format('evpipe.%I(text, text, jsonb, text)', evpipe._handler_entry(r.oid));
		BEGIN
			-- search_path is the caller's (the session's, as the C sets it), for the handler only
			EXECUTE pg_catalog.format($f$CREATE FUNCTION %s
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
	PERFORM pg_catalog.set_config('search_path', $4, true);
	EXECUTE pg_catalog.format('SELECT %%I.%%I($1)', $1, $2) USING $3;
END
$body$
$f$, pg_catalog.replace(f, '(text, text, jsonb, text)',
				'(handler_schema text, handler_name text, event jsonb, path text)'));
			EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s IS %L', f,
				pg_catalog.format('Internal (managed install): runs function destination handlers as role %s, for evpipe._deliver_function', r.rolname));
			EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
			IF r.rolname <> me THEN
				as_member := NOT super AND NOT pg_catalog.pg_has_role(me, r.oid, 'MEMBER');
				as_creator := NOT super AND NOT pg_catalog.has_schema_privilege(r.oid, 'evpipe', 'CREATE');
				IF as_member THEN
					EXECUTE pg_catalog.format('GRANT %I TO %I', r.rolname, me);
				END IF;
				IF as_creator THEN
					EXECUTE pg_catalog.format('GRANT CREATE ON SCHEMA evpipe TO %I', r.rolname);
				END IF;
				EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %I', f, r.rolname);
				IF as_creator THEN
					EXECUTE pg_catalog.format('REVOKE CREATE ON SCHEMA evpipe FROM %I', r.rolname);
				END IF;
			END IF;
			IF definer <> r.rolname THEN
				EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f, definer);
			END IF;
			IF r.rolname <> me AND as_member THEN
				EXECUTE pg_catalog.format('REVOKE %I FROM %I', r.rolname, me);
			END IF;
		EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
			-- a role this one may not act for: its deliveries answer 42501
			RAISE LOG 'evpipe: cannot create the handler entry point of role %: %', r.rolname, SQLERRM;
		END;
	END LOOP;
END
$$;
COMMENT ON FUNCTION evpipe._sync_handler_owners() IS
	'Internal (managed install): create and drop the entry points that run function destination handlers as their owners';

-- evpipe._deliver_function(destination, event): the handler of a function
-- destination, with one event, as the destination's owner, in a
-- subtransaction (its error is the answer), with timeout_ms as
-- statement_timeout and the session's search_path, as handler.c does.
CREATE OR REPLACE FUNCTION evpipe._deliver_function(destination text, event jsonb,
	OUT ok boolean, OUT permanent boolean, OUT error text)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	fn text;
	owner_oid oid;
	owner_name name;
	timeout_ms integer;
	handler regprocedure;
	handler_schema name;
	handler_name name;
	session_path text;
	owner_super boolean;
	settings_before jsonb;
	changed record;
BEGIN
	IF destination IS NULL OR event IS NULL THEN
		RAISE EXCEPTION 'destination and event must not be null' USING ERRCODE = '22004';
	END IF;
	SELECT d.config ->> 'function',
		COALESCE((SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = d.owner), 0),
		COALESCE((d.config ->> 'timeout_ms')::int, 10000)
		INTO fn, owner_oid, timeout_ms
		FROM evpipe.destinations d WHERE d.name = _deliver_function.destination AND d.kind = 'function';
	IF fn IS NULL OR owner_oid IS NULL OR timeout_ms IS NULL OR owner_oid = 0 THEN
		ok := false;
		permanent := true;
		error := pg_catalog.format('destination "%s" is not a function destination, or its owner role is gone',
			destination);
		RETURN;
	END IF;
	BEGIN
		PERFORM pg_catalog.set_config('statement_timeout', timeout_ms::text, true);
		-- the stored signature is schema-qualified against pg_catalog, pg_temp:
		-- resolved here with that path (the C resolves it with the session's)
		handler := fn::regprocedure;
		SELECT n.nspname, p.proname INTO handler_schema, handler_name
			FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
			WHERE p.oid = handler;
		SELECT s.reset_val INTO session_path FROM pg_catalog.pg_settings s WHERE s.name = 'search_path';
		-- the settings a handler may change, to undo what it changes (below)
		SELECT pg_catalog.jsonb_object_agg(s.name, s.setting) INTO settings_before
			FROM pg_catalog.pg_settings s WHERE s.context IN ('user', 'superuser') AND s.name <> 'search_path';
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
			WHERE p.pronamespace = 'evpipe'::pg_catalog.regnamespace
				AND p.proname = evpipe._handler_entry(owner_oid) AND p.proowner = owner_oid AND p.prosecdef) THEN
			SELECT r.rolname, r.rolsuper INTO owner_name, owner_super FROM pg_catalog.pg_roles r WHERE r.oid = owner_oid;
			IF NOT owner_super THEN
				RAISE EXCEPTION 'cannot run the handler of destination "%" as role "%"', destination, owner_name
					USING ERRCODE = '42501';
			END IF;
			-- a superuser's destination, and an install owner that is none (it may
			-- not act for a superuser): the handler runs as the install's owner,
			-- with less than its owner's rights, never more
			PERFORM pg_catalog.set_config('search_path', session_path, true);
			EXECUTE pg_catalog.format('SELECT %I.%I($1)', handler_schema, handler_name) USING event;
		ELSE
			-- nothing of ours runs after the handler but the end of this block
			EXECUTE pg_catalog.format('SELECT evpipe.%I($1, $2, $3, $4)', evpipe._handler_entry(owner_oid))
				USING handler_schema::text, handler_name::text, event, session_path;
		END IF;
		-- a plain SET in the handler would outlive it, in evpiped's session: undo
		-- every change (search_path back to the session's, whatever it was made)
		FOR changed IN SELECT s.name, settings_before ->> s.name AS was FROM pg_catalog.pg_settings s
			WHERE s.context IN ('user', 'superuser') AND s.name <> 'search_path'
				AND s.setting IS DISTINCT FROM settings_before ->> s.name
		LOOP
			PERFORM pg_catalog.set_config(changed.name, changed.was, false);
		END LOOP;
		PERFORM pg_catalog.set_config('search_path', session_path, false);
	EXCEPTION WHEN OTHERS OR query_canceled OR assert_failure THEN
		ok := false;
		permanent := SQLSTATE LIKE '22%' OR SQLSTATE LIKE '23%';
		error := SQLSTATE || ': ' || SQLERRM;
		-- evpiped's statement_timeout of timeout_ms (PL/pgSQL arms no timer)
		IF SQLSTATE = '57014' AND SQLERRM = 'canceling statement due to statement timeout' THEN
			error := pg_catalog.format('57014: the handler ran longer than timeout_ms (%s ms)', timeout_ms);
		END IF;
		RETURN;
	END;
	ok := true;
	permanent := false;
	error := NULL;
END
$$;
