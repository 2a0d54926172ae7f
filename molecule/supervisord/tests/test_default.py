"""supervisord is installed; programs are rendered one file each."""


def test_installed(host) -> None:
    assert host.package("supervisor").is_installed


def test_program_file(host) -> None:
    conf = host.file("/etc/supervisor/conf.d/sleeper.conf")
    assert conf.contains(r"^\[program:sleeper\]$")
    assert conf.contains("^autorestart=true$")


def test_config_parses(host) -> None:
    assert host.run("supervisord -c /etc/supervisor/supervisord.conf --help").rc == 0
