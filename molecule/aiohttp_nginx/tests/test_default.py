"""nginx is installed and configured; the config is valid."""


def test_installed(host) -> None:
    assert host.package("nginx").is_installed


def test_config_is_valid(host) -> None:
    assert host.run("nginx -t").rc == 0


def test_server_tokens_off(host) -> None:
    assert host.file("/etc/nginx/nginx.conf").contains("server_tokens off;")


def test_open_file_cache_on(host) -> None:
    assert host.file("/etc/nginx/nginx.conf").contains("open_file_cache max=1000 inactive=20s;")


def test_default_site_removed(host) -> None:
    assert not host.file("/etc/nginx/sites-enabled/default").exists
