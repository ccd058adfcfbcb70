// Short names for the SQL calls the e2e tests make over and over.
'use strict';

function evpipeApi(getPg) {
  const q = (sql, params) => getPg().query(sql, params);
  return {
    q,
    dest: (name, kind, config) => q('SELECT evpipe.create_destination($1, $2, $3::jsonb)', [name, kind, JSON.stringify(config)]),
    route: (type, d) => q('SELECT evpipe.add_route($1, $2)', [type, d]),
    type: (name, schema = { type: 'object' }) => q('SELECT evpipe.register_event_type($1, $2::jsonb)', [name, JSON.stringify(schema)]),
  };
}

module.exports = { evpipeApi };
