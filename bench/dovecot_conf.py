"""A private Dovecot's configuration, for the imap benchmark and the tests alike.

The recipe of PEERS.md section 1, with what running it taught: `first_valid_uid`
8 for Debian's `mail` user, a "/" hierarchy separator as most providers have
(Maildir++ would use "."), `auth_failure_delay = 0`, and the anvil auth penalty
off (after a failed login from 127.0.0.1 it delays later logins by 2, 4, 8 and
15 s, which `auth_failure_delay` alone does not prevent). The password passdb
takes only PLAIN/LOGIN, so that with OAuth2 a bad token is never tried as a
password.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAIL_UID = MAIL_GID = 8  # Debian's `mail` user
HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class DovecotSetup:
    dir: Path  # holds run/, state/, the users file and the log
    instance: str
    port: int
    imaps_port: int = 0  # 0: no IMAPS listener
    tls: tuple[Path, Path] | None = None  # certificate and key: STARTTLS and IMAPS
    oauth_conf: Path | None = None  # a dovecot-oauth2.conf.ext: XOAUTH2/OAUTHBEARER too
    debug: bool = False

    def render(self) -> str:
        d = self.dir
        mechanisms = "plain login" + (" xoauth2 oauthbearer" if self.oauth_conf else "")
        ssl = (
            f"ssl = yes\nssl_cert = <{self.tls[0]}\nssl_key = <{self.tls[1]}"
            if self.tls
            else "ssl = no"
        )
        oauth = (
            f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
            f"  args = {self.oauth_conf}\n}}\n"
            if self.oauth_conf
            else ""
        )
        imaps = (
            f"  inet_listener imaps {{\n    address = {HOST}\n    port = {self.imaps_port}\n"
            "    ssl = yes\n  }\n"
            if self.imaps_port and self.tls
            else "  inet_listener imaps {\n    port = 0\n  }\n"
        )
        return f"""instance_name = {self.instance}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = {HOST}
first_valid_uid = {MAIL_UID}
first_valid_gid = {MAIL_GID}
mail_uid = mail
mail_gid = mail
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
mailbox_idle_check_interval = 1 secs
auth_failure_delay = 0
auth_verbose = yes
auth_debug = {"yes" if self.debug else "no"}
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
{ssl}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {d}/users
}}
{oauth}userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
{imaps}}}
"""
