#!/usr/bin/python3
"""dbctl's client for Patroni's REST API on this node (installed by dbctl as
/usr/local/sbin/dbctl-patroni, run as root over SSH).

The API is TLS with client certificates and basic auth (see /etc/patroni/config.yml); this
reads the address, the TLS files and the credentials from Patroni's own config, so no secret is
ever on a command line.

  dbctl-patroni topology               the cluster (GET /cluster) and the leader's replication
                                       (GET /patroni on the leader) as one JSON document
  dbctl-patroni get PATH [MEMBER]      GET PATH on this node (or on MEMBER, by name)
  dbctl-patroni post PATH BODY [MEMBER]  POST the JSON BODY ('-' = stdin)
  dbctl-patroni patch-config BODY      PATCH /config (the cluster-wide dynamic configuration)

Exit 0 with the response body on stdout for HTTP 2xx; 1 with "HTTP <status>: <body>" on stderr
otherwise; 2 when the API cannot be reached.
"""
import base64
import json
import ssl
import sys
import urllib.error
import urllib.request

import yaml

CONFIG = '/etc/patroni/config.yml'


def load():
    with open(CONFIG) as f:
        cfg = yaml.safe_load(f)
    api = cfg['restapi']
    ctx = ssl.create_default_context(cafile=api['cafile'])
    ctx.load_cert_chain(api['certfile'], api['keyfile'])
    auth = api.get('authentication') or {}
    token = base64.b64encode(
        ('%s:%s' % (auth.get('username', ''), auth.get('password', ''))).encode()).decode()
    port = api['listen'].rsplit(':', 1)[1]
    return ctx, token, port


CTX, TOKEN, PORT = load()


def call(method, path, body=None, base=None):
    url = (base or 'https://127.0.0.1:%s' % PORT).rstrip('/') + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header('Authorization', 'Basic ' + TOKEN)
    if data is not None:
        req.add_header('Content-Type', 'application/json')
    try:
        with urllib.request.urlopen(req, context=CTX, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:
        print('cannot reach %s: %s' % (url, e), file=sys.stderr)
        sys.exit(2)


def member_base(name):
    status, text = call('GET', '/cluster')
    if status != 200:
        fail(status, text)
    for m in json.loads(text).get('members', []):
        if m['name'] == name and m.get('api_url'):
            return m['api_url'].rsplit('/', 1)[0]
    print('no member %s in the cluster' % name, file=sys.stderr)
    sys.exit(1)


def fail(status, text):
    print('HTTP %s: %s' % (status, text.strip()), file=sys.stderr)
    sys.exit(1)


def done(status, text):
    if 200 <= status < 300:
        print(text)
        sys.exit(0)
    fail(status, text)


def body_arg(arg):
    return json.loads(sys.stdin.read() if arg == '-' else arg)


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        sys.exit(1)
    cmd, args = argv[0], argv[1:]
    if cmd == 'topology':
        status, text = call('GET', '/cluster')
        if status != 200:
            fail(status, text)
        cluster = json.loads(text)
        leader = next((m for m in cluster.get('members', []) if m.get('role') == 'leader'), None)
        replication = []
        if leader and leader.get('api_url'):
            s, t = call('GET', '/patroni', base=leader['api_url'].rsplit('/', 1)[0])
            if s == 200:
                replication = json.loads(t).get('replication', [])
        print(json.dumps({'cluster': cluster, 'replication': replication}))
        return
    if cmd == 'get':
        base = member_base(args[1]) if len(args) > 1 else None
        done(*call('GET', args[0], base=base))
    if cmd == 'post':
        base = member_base(args[2]) if len(args) > 2 else None
        done(*call('POST', args[0], body_arg(args[1]), base=base))
    if cmd == 'patch-config':
        done(*call('PATCH', '/config', body_arg(args[0])))
    print('unknown command %s' % cmd, file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
    main(sys.argv[1:])
