// Short names for the SQL calls the e2e tests make over and over.
'use strict';

function evpipeApi(getPg) {
  const q = (sql, params) => getPg().query(sql, params);
  return {
    q,
    dest: (name, kind, config) => q('SELECT evpipe.create_destination($1, $2, $3::jsonb)', [name, kind, JSON.stringify(config)]),
    route: (type, d) => q('SELECT evpipe.add_route($1, $2)', [type, d]),
    type: (name, schema = { type: 'object' }) => q('SELECT evpipe.register_event_type($1, $2::jsonb)', [name, JSON.stringify(schema)]),
    // A function destination owned by "handler_owner", an evpipe_admin and no superuser,
    // which is given `owns` first (e.g. ['TABLE t', 'FUNCTION f(jsonb)']): its handler
    // runs as that role in both installs (the managed install cannot act for a superuser)
    fnDest: async (name, config, owns = []) => {
      await q(`DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'handler_owner') THEN
          CREATE ROLE handler_owner NOLOGIN IN ROLE evpipe_admin;
        END IF; END $$`);
      for (const o of owns) await q(`ALTER ${o} OWNER TO handler_owner`);
      const c = await getPg().client();
      try {
        await c.query('SET ROLE handler_owner');
        await c.query('SELECT evpipe.create_destination($1, $2, $3::jsonb)', [name, 'function', JSON.stringify(config)]);
      } finally {
        await c.end();
      }
    },
  };
}

module.exports = { evpipeApi };
