"""A TLS-terminating TCP proxy for the tests: serves a certificate the
system does not trust on 127.0.0.1:PORT and forwards the plain bytes to
127.0.0.1:UPSTREAM (a Git HTTP server, the Tyk emulator).

usage: tls_proxy.py CERT KEY PORT UPSTREAM
"""
import select
import socket
import ssl
import sys
import threading

cert, key, port, upstream = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(128)


def pipe(client):
    try:
        tls = context.wrap_socket(client, server_side=True)
    except (ssl.SSLError, OSError):
        # The client refused our certificate: exactly what some tests expect.
        client.close()
        return
    up = socket.create_connection(("127.0.0.1", upstream))
    try:
        while True:
            readable, _, _ = select.select([tls, up], [], [], 60)
            if not readable:
                return
            for side in readable:
                other = up if side is tls else tls
                data = side.recv(65536)
                if not data:
                    return
                other.sendall(data)
                # Bytes already decrypted inside the SSL object are not seen
                # by select: drain them now.
                while side is tls and tls.pending():
                    up.sendall(tls.recv(65536))
    except OSError:
        return
    finally:
        tls.close()
        up.close()


while True:
    conn, _ = server.accept()
    threading.Thread(target=pipe, args=(conn,), daemon=True).start()
