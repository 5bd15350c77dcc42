"""An HTTP server on the standard library's http.server: a greeting on /, "ok" on /health.

`greeter --port 8000` serves; `greeter --get PATH` prints a page of the server running on
that port and exits 0 when it answered 200, else 1: the image has no curl, this is its
healthcheck (`greeter --get /health`) and what `kiln exec` asks it with.
"""

import argparse
import os
import pwd
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import __version__


def greeting():
    user = pwd.getpwuid(os.getuid()).pw_name
    python = "%d.%d" % sys.version_info[:2]
    return "hello from greeter %s on Python %s, as %s (uid %d)\n" % (
        __version__,
        python,
        user,
        os.getuid(),
    )


class Handler(BaseHTTPRequestHandler):
    server_version = "greeter/" + __version__

    def do_GET(self):
        if self.path == "/":
            self.reply(200, greeting())
        elif self.path == "/health":
            self.reply(200, "ok\n")
        else:
            self.reply(404, "not found: %s\n" % self.path)

    def log_request(self, code="-", size="-"):
        if self.path != "/health":  # the healthcheck's every few seconds: not worth a line
            super().log_request(code, size)

    def reply(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def get(port, path):
    url = "http://127.0.0.1:%d%s" % (port, path)
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            sys.stdout.write(answer.read().decode())
            return 0
    except OSError as error:  # HTTPError (not 200) and URLError are OSErrors
        print("greeter --get: %s: %s" % (url, error), file=sys.stderr)
        return 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="greeter", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--get", metavar="PATH", help="print a page of the running server")
    args = parser.parse_args(argv)
    if args.get is not None:
        return get(args.port, args.get)
    server = ThreadingHTTPServer(("", args.port), Handler)
    print("greeter %s listening on port %d" % (__version__, args.port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
