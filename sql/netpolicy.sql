-- Outbound network policy at create time: a destination URL whose host is a
-- link-local or cloud metadata address, in any notation curl accepts, is
-- refused (22023, the rule named). Names are checked when connecting.
\set SHOW_CONTEXT never
CREATE FUNCTION try_np(k text, c jsonb, show_detail boolean DEFAULT false) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text; hint text;
BEGIN
	PERFORM evpipe.create_destination('np', k, c);
	PERFORM evpipe.drop_destination('np');
	RETURN 'created';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
		hint = PG_EXCEPTION_HINT;
	IF NOT show_detail THEN
		RETURN st || ' ' || msg;
	END IF;
	RETURN st || ' ' || msg || E'\nDETAIL: ' || det || E'\nHINT: ' || hint;
END $$;
-- the metadata address and link-local addresses, with the full detail once
\pset format unaligned
SELECT try_np('http', '{"url": "http://169.254.169.254/latest/meta-data/"}', true);
\pset format aligned
SELECT try_np('http', '{"url": "http://169.254.0.1:8080/hook"}') AS link_local;
SELECT try_np('graphql', '{"url": "https://[fe80::1]/graphql", "query": "{ x }"}') AS ipv6_link_local;
SELECT try_np('http', '{"url": "http://[fe80::1%25eth0]:80/"}') AS ipv6_zone;
SELECT try_np('http', '{"url": "http://[FD00:EC2::254]/"}') AS aws_ipv6_metadata;
SELECT try_np('http', '{"url": "http://[::ffff:169.254.169.254]/"}') AS ipv4_mapped;
SELECT try_np('http', '{"url": "http://[::ffff:a9fe:101]/"}') AS ipv4_mapped_hex;
SELECT try_np('http', '{"url": "http://[64:ff9b::169.254.169.254]/"}') AS nat64;
-- numeric IPv4 forms curl and inet_aton accept
SELECT try_np('http', '{"url": "http://2852039166/"}') AS decimal;
SELECT try_np('http', '{"url": "http://0xA9FEA9FE/"}') AS hex;
SELECT try_np('http', '{"url": "http://0xa9.0xfe.0xa9.0xfe/"}') AS hex_parts;
SELECT try_np('http', '{"url": "http://0251.0376.0251.0376/"}') AS octal;
SELECT try_np('http', '{"url": "http://169.254.43518/"}') AS three_parts;
SELECT try_np('http', '{"url": "http://169.16689662/"}') AS two_parts;
SELECT try_np('http', '{"url": "http://169.254.169.254.:80/"}') AS trailing_dot;
SELECT try_np('http', '{"url": "http://%31%36%39.254.169.254/"}') AS percent_encoded;
SELECT try_np('http', '{"url": "http://0x0000000000a9fea9fe/"}') AS hex_leading_zeros;
-- every URL key of every kind
SELECT try_np('sqs', '{"queue_url": "https://169.254.169.254/1/q", "region": "us-east-1"}') AS queue_url;
SELECT try_np('sqs', '{"queue_url": "https://sqs.us-east-1.amazonaws.com/1/q", "region": "us-east-1",
	"endpoint_url": "http://169.254.170.2/"}') AS endpoint_url;
-- allowed: neighbours, loopback, names, and forms that are not addresses
SELECT try_np('http', '{"url": "http://169.253.255.255/"}') AS neighbour_below;
SELECT try_np('http', '{"url": "http://169.255.0.0/"}') AS neighbour_above;
SELECT try_np('http', '{"url": "http://[fec0::1]/"}') AS outside_fe80_10;
SELECT try_np('http', '{"url": "http://[fd00:ec2::253]/"}') AS not_aws_metadata;
SELECT try_np('http', '{"url": "http://127.0.0.1:8080/hook"}') AS loopback;
SELECT try_np('http', '{"url": "http://[::1]:8080/hook"}') AS loopback6;
SELECT try_np('http', '{"url": "http://localhost/"}') AS name;
SELECT try_np('http', '{"url": "http://169.254.169.254.example.com/"}') AS longer_name;
SELECT try_np('http', '{"url": "http://0x1.0x2.0x3.0x4.0x5/"}') AS five_parts;
SELECT try_np('http', '{"url": "http://169.254.169.256/"}') AS octet_too_big;
SELECT try_np('http', '{"url": "http://0xa9fea9fe00/"}') AS hex_too_big;
SELECT try_np('http', '{"url": "http://089.254.169.254/"}') AS not_octal;
SELECT try_np('http', '{"url": "http://example.com/?next=http://169.254.169.254/"}') AS in_query;

DROP FUNCTION try_np(text, jsonb, boolean);
