"""The machine set-up the suite (and users' az/SDK clients) rely on. Fails with a fix, never skips."""

import socket


def test_vault_subdomains_of_localhost_resolve_to_loopback():
    # Key Vault data-plane URLs are https://NAME.vault.localhost:PORT; glibc resolves *.localhost only
    # with nss-myhostname (Debian: `apt-get install libnss-myhostname`, which .ci/run does).
    try:
        infos = socket.getaddrinfo("e2e-probe.vault.localhost", 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror as err:
        raise AssertionError(
            f"e2e-probe.vault.localhost does not resolve ({err}): install libnss-myhostname "
            "and put `myhostname` on the `hosts:` line of /etc/nsswitch.conf"
        ) from err
    addresses = {info[4][0] for info in infos}
    assert addresses <= {"127.0.0.1", "::1"}, addresses
    assert addresses, "no address"
