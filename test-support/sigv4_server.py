"""A stand-in for an AMP remote_write endpoint that checks SigV4 with botocore.

    python sigv4_server.py PORT_FILE ACCESS_KEY SECRET_KEY REGION STATUS[,STATUS...]

Listens on 127.0.0.1 (a free port, written to PORT_FILE). For each POST it rebuilds
the canonical request from what arrived (method, path, the headers named in
SignedHeaders, the body) and computes the signature with botocore's SigV4Auth for
service "aps", independently of the client under test. A request whose signature
or credential scope does not match gets 403 "signature mismatch". A request that
matches gets the next status of the list (the last one repeats). Each request is
logged on stdout as one line: "ok STATUS" or "bad REASON".
"""

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

port_file, access_key, secret_key, region, statuses = sys.argv[1:6]
STATUSES = [int(s) for s in statuses.split(",")]
CREDS = Credentials(access_key, secret_key)
SERVED = [0]


def verify(method, host, path, headers, body):
    auth = headers.get("authorization", "")
    prefix = "AWS4-HMAC-SHA256 "
    if not auth.startswith(prefix):
        return "no SigV4 Authorization header"
    parts = dict(p.strip().split("=", 1) for p in auth[len(prefix):].split(","))
    scope = parts["Credential"].split("/")
    if scope[0] != access_key:
        return "unknown access key " + scope[0]
    if scope[2:] != [region, "aps", "aws4_request"]:
        return "wrong credential scope " + "/".join(scope[1:])
    amz_date = headers.get("x-amz-date", "")
    if not amz_date.startswith(scope[1]):
        return "x-amz-date does not match the scope date"
    signed = parts["SignedHeaders"].split(";")
    if "host" not in signed:
        return "host is not signed"
    req = AWSRequest(
        method=method,
        url="http://" + host + path,
        data=body,
        headers={h: headers[h] for h in signed if h in headers},
    )
    signer = SigV4Auth(CREDS, "aps", region)
    req.context["timestamp"] = amz_date
    canonical = signer.canonical_request(req)
    expected = signer.signature(signer.string_to_sign(req, canonical), req)
    if expected != parts["Signature"]:
        return "signature mismatch"
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        problem = verify("POST", headers.get("host", ""), self.path, headers, body)
        if problem is None and body != b"\x00":
            problem = "body is not an empty snappy WriteRequest: %r" % body[:32]
        if problem is None and headers.get("content-encoding") != "snappy":
            problem = "content-encoding is not snappy"
        if problem is not None:
            status, text = 403, "signature mismatch: " + problem
            print("bad " + problem, flush=True)
        else:
            i = min(SERVED[0], len(STATUSES) - 1)
            SERVED[0] += 1
            status, text = STATUSES[i], "test answer %d" % STATUSES[i]
            print("ok %d" % status, flush=True)
        data = (text + "\n").encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".part", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".part", port_file)
server.serve_forever()
