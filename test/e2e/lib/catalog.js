// What makes two installs of evpipe the same schema, category by category
// (the upgrade tests: an upgraded database against a fresh install).
'use strict';

// What makes two installs of the extension the same schema, category by category.
const MEMBERS = `SELECT d.classid, d.objid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
  WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'evpipe'`;
const CATALOG = {
  extension: `SELECT extname, extversion, extrelocatable, extnamespace::regnamespace::text AS schema,
      obj_description(oid, 'pg_extension') AS comment FROM pg_extension WHERE extname = 'evpipe'`,
  members: `SELECT pg_describe_object(classid, objid, 0) AS object FROM (${MEMBERS}) m ORDER BY 1`,
  dumped: `SELECT x.rel::regclass::text AS relation, x.cond FROM pg_extension e,
      unnest(e.extconfig, e.extcondition) AS x(rel, cond) WHERE e.extname = 'evpipe' ORDER BY 1`,
  schema: `SELECT nspname, nspacl::text, pg_get_userbyid(nspowner) AS owner, obj_description(oid, 'pg_namespace') AS comment
      FROM pg_namespace WHERE nspname = 'evpipe'`,
  functions: `SELECT p.oid::regprocedure::text AS signature, p.prokind, p.provolatile, p.prosecdef, p.proisstrict,
      p.proparallel, p.proleakproof, p.procost, p.prorows, p.proretset, p.proconfig, p.proacl::text AS acl,
      pg_get_userbyid(p.proowner) AS owner, l.lanname, pg_get_function_result(p.oid) AS result,
      pg_get_function_arguments(p.oid) AS args,
      CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END AS def,
      obj_description(p.oid, 'pg_proc') AS comment
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = 'evpipe'::regnamespace ORDER BY 1`,
  relations: `SELECT c.relname, c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity, c.reloptions,
      c.relacl::text AS acl, pg_get_userbyid(c.relowner) AS owner, c.relreplident, am.amname, c.relhasrules,
      c.relhastriggers, obj_description(c.oid, 'pg_class') AS comment
    FROM pg_class c LEFT JOIN pg_am am ON am.oid = c.relam WHERE c.relnamespace = 'evpipe'::regnamespace ORDER BY 1`,
  columns: `SELECT c.relname, row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS position, a.attname,
      format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull, a.attidentity, a.attgenerated, a.atthasdef,
      pg_get_expr(d.adbin, d.adrelid) AS "default", co.collname, a.attacl::text AS acl, a.attstorage,
      a.attcompression, a.attstattarget, col_description(c.oid, a.attnum) AS comment
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    WHERE c.relnamespace = 'evpipe'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2`,
  sequences: `SELECT c.relname, format_type(s.seqtypid, NULL) AS type, s.seqstart, s.seqincrement, s.seqmax, s.seqmin,
      s.seqcache, s.seqcycle, (SELECT d.refobjid::regclass::text || '.' || d.refobjsubid FROM pg_depend d
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')) AS owned_by
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = 'evpipe'::regnamespace ORDER BY 1`,
  indexes: `SELECT c.relname, pg_get_indexdef(i.indexrelid) AS def, i.indisunique, i.indisprimary, i.indimmediate,
      i.indisclustered, i.indisvalid, i.indisreplident, i.indnullsnotdistinct
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = 'evpipe'::regnamespace ORDER BY 1`,
  constraints: `SELECT conrelid::regclass::text AS rel, conname, contype, pg_get_constraintdef(oid) AS def, condeferrable,
      condeferred, convalidated, conislocal, connoinherit, obj_description(oid, 'pg_constraint') AS comment
    FROM pg_constraint WHERE connamespace = 'evpipe'::regnamespace ORDER BY 1, 2, 4`,
  views: `SELECT c.relname, pg_get_viewdef(c.oid, true) AS def FROM pg_class c
    WHERE c.relnamespace = 'evpipe'::regnamespace AND c.relkind IN ('v', 'm') ORDER BY 1`,
  rules: `SELECT tablename, rulename, definition FROM pg_rules WHERE schemaname = 'evpipe' ORDER BY 1, 2`,
  triggers: `SELECT t.tgrelid::regclass::text AS rel, t.tgname, pg_get_triggerdef(t.oid, true) AS def, t.tgenabled,
      obj_description(t.oid, 'pg_trigger') AS comment
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'evpipe'::regnamespace AND NOT t.tgisinternal ORDER BY 1, 2`,
  policies: `SELECT schemaname, tablename, policyname, permissive, roles::text, cmd, qual, with_check
    FROM pg_policies WHERE schemaname = 'evpipe' ORDER BY 2, 3`,
  types: `SELECT t.typname, t.typtype, t.typacl::text AS acl, pg_get_userbyid(t.typowner) AS owner,
      obj_description(t.oid, 'pg_type') AS comment FROM pg_type t WHERE t.typnamespace = 'evpipe'::regnamespace ORDER BY 1`,
  // every comment on the extension's objects and their parts (columns, constraints, triggers)
  comments: `SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid) AS object, d.description FROM pg_description d
    WHERE (d.classoid, d.objoid) IN (${MEMBERS})
      OR (d.classoid = 'pg_constraint'::regclass AND d.objoid IN (SELECT oid FROM pg_constraint WHERE connamespace = 'evpipe'::regnamespace))
      OR (d.classoid = 'pg_trigger'::regclass AND d.objoid IN (SELECT t.oid FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = 'evpipe'::regnamespace))
    ORDER BY 1`,
  // the privileges pg_dump takes as the extension's own (it dumps only what differs from them)
  initPrivileges: `SELECT pg_describe_object(p.classoid, p.objoid, p.objsubid) AS object, p.privtype, p.initprivs::text
    FROM pg_init_privs p WHERE (p.classoid, p.objoid) IN (${MEMBERS}) ORDER BY 1`,
  roles: `SELECT rolname, rolcanlogin, rolsuper, rolinherit FROM pg_roles WHERE rolname LIKE 'evpipe%' ORDER BY 1`,
};

// The managed install is no extension: the same categories, minus those of
// pg_extension, with the comments of everything in schema evpipe.
const MANAGED_SKIP = ['extension', 'members', 'dumped', 'initPrivileges'];
const IN_SCHEMA = `SELECT 'pg_proc'::regclass::oid, oid FROM pg_proc WHERE pronamespace = 'evpipe'::regnamespace
  UNION ALL SELECT 'pg_class'::regclass::oid, oid FROM pg_class WHERE relnamespace = 'evpipe'::regnamespace
  UNION ALL SELECT 'pg_constraint'::regclass::oid, oid FROM pg_constraint WHERE connamespace = 'evpipe'::regnamespace
  UNION ALL SELECT 'pg_trigger'::regclass::oid, t.oid FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'evpipe'::regnamespace`;
const MANAGED_COMMENTS = `SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid) AS object, d.description
  FROM pg_description d WHERE (d.classoid, d.objoid) IN (${IN_SCHEMA}) ORDER BY 1`;

// The catalog of evpipe in a database: {category: [row as JSON, ...]}.
async function catalogOf(client, { managed = false } = {}) {
  const out = {};
  for (const [k, sql0] of Object.entries(CATALOG)) {
    if (managed && MANAGED_SKIP.includes(k)) continue;
    const sql = managed && k === 'comments' ? MANAGED_COMMENTS : sql0;
    out[k] = (await client.query(sql)).rows.map((r) => JSON.stringify(r));
  }
  return out;
}

module.exports = { CATALOG, catalogOf };
