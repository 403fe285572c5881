#!/usr/bin/env python3
"""Writes N services (one instance each) into a registry over one keep-alive connection.

usage: fill.py HOST:PORT N
Service s<i> gets /services/s<i>/a = {"host": "10.<a>.<b>.<c>", "port": 80}.
"""
import http.client
import sys
import urllib.parse


def host_of(i):
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def main():
    hostport, n = sys.argv[1], int(sys.argv[2])
    host, port = hostport.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    for i in range(n):
        value = '{"host": "%s", "port": 80}' % host_of(i)
        body = urllib.parse.urlencode({"value": value})
        conn.request("PUT", f"/v2/keys/services/s{i}/a", body,
                     {"Content-Type": "application/x-www-form-urlencoded"})
        r = conn.getresponse()
        r.read()
        if r.status // 100 != 2:
            sys.exit(f"PUT s{i}: HTTP {r.status}")


if __name__ == "__main__":
    main()
