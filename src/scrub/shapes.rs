//! Program shapes: where one program's lines name a person, declared once
//! as a row of [`SHAPES`] and compiled into one matcher.
//!
//! A row is the program, the shape, and an example line (a test scrubs
//! every example and checks that each name slot was rewritten). A shape is
//! literal text with slots:
//!
//! - `%n`: a name (letters, digits, `. _ - $ @ +`, non-ASCII), rewritten
//!   with the `logins` action unless it is a system account;
//! - `%w`: words up to the next literal on the line (a display name such
//!   as `"Tina Example"`), rewritten whole;
//! - `%k`: a name that is kept (a repository, a group);
//! - `%q`, `%Q`: a quoted name, `'NAME'` or `` `NAME' `` (shadow-utils 4.2
//!   on, and 4.1), rewritten (`%q`) or kept (`%Q`, a group); anything up to
//!   the closing `'` on the line, at most 256 bytes.
//!
//! and marks that match text without capturing it:
//!
//! - `%^`: the shape starts the text or follows a space (su's and cron's
//!   `(`, sudo's user); only first;
//! - `%s`: any text on the same line up to the literal after it, at most
//!   512 bytes, holding neither the literal before it nor the one after it
//!   (the nearest pair: sudo's ` : ` ... `TTY=`); the literal after it is
//!   the shape's key, so each key found costs a look back no longer than
//!   the distance to the previous one (a hostile line stays linear);
//! - `%{a|b}`: one of these literals (`)` or `,` after dovecot's user);
//!   never a key.
//!
//! One literal of each shape is its key (the one with the rarest first
//! bytes, see [`choose_key`]); one Aho-Corasick automaton finds [`KEY_LEN`]
//! bytes of every key in the text, and the rest of the shape (the key's
//! other bytes included) is matched around the hit, forward and backward.
//! A shape opening with a lower-case word and `(` (dovecot's `imap(%n`) is
//! keyed by that word instead, found before each `(` of the text (see
//! [`Shapes::calls`]). Literals are case-sensitive: these are the programs' own
//! format strings. A shape whose first literal starts with a letter or
//! digit must start a word (no letter, digit, `_`, `-` or `.` before it:
//! `x_pam(` is not dovecot's `pam(`). Adding a program is one row here and
//! its lines in the corpus (`tests/corpus/scrub/`).

use core::ops::ControlFlow;

use aho_corasick::{AhoCorasick, MatchKind};

use super::keygate::KeyGate;

/// One program shape (see the module doc).
pub struct Row {
    pub program: &'static str,
    pub shape: &'static str,
    /// A real line of the program (read by the tests: every row matches
    /// its example).
    #[cfg_attr(not(test), allow(dead_code))]
    pub example: &'static str,
}

/// The table. Keep rows grouped by program; the example is a real line.
pub const SHAPES: &[Row] = &[
    Row {
        program: "python-ldap-auth",
        shape: "Authenticated as %n via ",
        example: "INFO app.auth: Authenticated as kate via LDAP",
    },
    Row {
        program: "generic",
        shape: "logged in as %n",
        example: "user paul logged in as paul from 203.0.113.98",
    },
    Row {
        program: "generic",
        shape: "login failed for \"%n\"",
        example: "WARN login failed for \"quinn\" from 203.0.113.99",
    },
    Row {
        program: "generic",
        shape: "login failed for '%n'",
        example: "WARN login failed for 'quinn'",
    },
    Row {
        program: "roundcube",
        shape: "Failed login for %n from ",
        example: "<a1b2> Failed login for erin from 203.0.113.43 in session a1b2 (error: 0)",
    },
    Row {
        program: "roundcube",
        shape: "Successful login for %n (ID: ",
        example: "<a1b2> Successful login for erin (ID: 7) from 203.0.113.43",
    },
    Row {
        program: "roundcube",
        shape: "Login failed for %n against ",
        example: "IMAP Error: Login failed for erin against 127.0.0.1 from 203.0.113.43.",
    },
    Row {
        program: "gitea",
        shape: "Failed authentication attempt for %n from ",
        example: "[I] Failed authentication attempt for dave from 203.0.113.73:0: user does not exist",
    },
    Row {
        program: "gitea",
        shape: "completed GET /%n/%k/src/",
        example: "router: completed GET /dave/dotfiles/src/branch/main for 203.0.113.73:51234, 200 OK",
    },
    Row {
        program: "forgejo",
        shape: "Unable to get repository: %n/%k Error",
        example: "[E] Unable to get repository: erin/notes Error: repository does not exist",
    },
    Row {
        program: "forgejo",
        shape: "owner_name: %n, ",
        example: "[id: 0, uid: 0, owner_name: erin, name: notes]",
    },
    Row {
        program: "jenkins",
        shape: "Failed to authenticate with basic auth for %n",
        example: "WARNING j.s.s.BasicHeaderProcessor#doFilter: Failed to authenticate with basic auth for nina",
    },
    Row {
        program: "openvpn",
        shape: "[%n] Peer Connection Initiated with ",
        example: "203.0.113.44:51234 [alice] Peer Connection Initiated with [AF_INET]203.0.113.44:51234",
    },
    Row {
        program: "openvpn",
        shape: "authentication succeeded for username '%n'",
        example: "TLS: Username/Password authentication succeeded for username 'bob'",
    },
    Row {
        program: "openvpn",
        shape: " %n/%k MULTI",
        example: "2024-10-10 13:55:36 alice/203.0.113.44:51234 MULTI_sva: pool returned IPv4=10.8.0.6",
    },
    Row {
        program: "openvpn",
        shape: " %n/%k SIGUSR1[",
        example: "2024-10-10 13:55:37 alice/203.0.113.44:51234 SIGUSR1[soft,ping-restart] received",
    },
    Row {
        program: "vsftpd",
        shape: "] [%n] OK LOGIN: ",
        example: "[pid 3000] [carol] OK LOGIN: Client \"::ffff:203.0.113.77\"",
    },
    Row {
        program: "vsftpd",
        shape: "] [%n] FAIL LOGIN: ",
        example: "[pid 3002] [dave] FAIL LOGIN: Client \"::ffff:203.0.113.78\"",
    },
    Row {
        program: "vsftpd",
        shape: "] [%n] OK UPLOAD: ",
        example: "[pid 3000] [carol] OK UPLOAD: Client \"::ffff:203.0.113.77\", \"/x\", 12 bytes",
    },
    Row {
        program: "vsftpd",
        shape: "] [%n] OK DOWNLOAD: ",
        example: "[pid 3000] [carol] OK DOWNLOAD: Client \"::ffff:203.0.113.77\", \"/x\", 12 bytes",
    },
    Row {
        program: "vsftpd-xferlog",
        shape: " r %n ftp 0 * ",
        example: "1 203.0.113.77 1048576 /srv/backup.tar.gz b _ i r carol ftp 0 * c",
    },
    Row {
        program: "login",
        shape: " FOR '%n', ",
        example: "FAILED LOGIN (1) on '/dev/tty1' FOR 'dave', Authentication failure",
    },
    Row {
        program: "postgresql",
        shape: "role \"%n\" does not exist",
        example: "FATAL:  role \"ivan\" does not exist",
    },
    Row {
        program: "apt",
        shape: "Requested-By: %n (",
        example: "Requested-By: alice (1000)",
    },
    Row {
        program: "auditd",
        shape: " acct=\"%n\" ",
        example: "msg='op=PAM:authentication grantors=pam_unix acct=\"alice\" exe=\"/usr/bin/sudo\"",
    },
    Row {
        program: "mongodb",
        shape: "\"principalName\":\"%n\"",
        example: "\"attr\":{\"mechanism\":\"SCRAM-SHA-256\",\"principalName\":\"alice\",\"authenticationDatabase\":\"admin\"}",
    },
    Row {
        program: "samba",
        shape: "Authentication for user [%n] -> [%n] ",
        example: "check_ntlm_password:  Authentication for user [alice] -> [alice] FAILED with error NT_STATUS_WRONG_PASSWORD",
    },
    Row {
        program: "samba",
        shape: " initially as user %n (",
        example: "connect to service homes initially as user bob (uid=1001, gid=1001) (pid 4567)",
    },
    Row {
        program: "synapse",
        shape: "Failed password login for user @%n:",
        example: "INFO - POST-12346 - Failed password login for user @bob:matrix.example",
    },
    Row {
        program: "mastodon",
        shape: "/users/%n/",
        example: "method=GET path=/users/bob/outbox format=json controller=ActivityPub::OutboxesController",
    },
    Row {
        program: "mastodon",
        shape: "/users/%n ",
        example: "Error delivering https://mastodon.example/users/bob to https://other.example/inbox",
    },
    Row {
        program: "peertube",
        shape: "\"url\":\"/a/%n/",
        example: "{\"level\":\"info\",\"message\":\"HTTP request\",\"method\":\"GET\",\"url\":\"/a/carol/video-channels\"}",
    },
    Row {
        program: "nextcloud",
        shape: "/remote.php/dav/files/%n/",
        example: "\"PROPFIND /remote.php/dav/files/heidi/ HTTP/1.1\"",
    },
    Row {
        program: "nextcloud",
        shape: "\"message\":\"Scanning files for %n\"",
        example: "\"message\":\"Scanning files for heidi\"",
    },
    Row {
        program: "vaultwarden",
        shape: "User %n logged in successfully.",
        example: "[vaultwarden::api::identity][INFO] User lena@example.org logged in successfully. IP: 203.0.113.96",
    },
    Row {
        program: "mail",
        shape: "From: \"%w\" <",
        example: "From: \"Tina Example\" <tina@example.org> Subject: invoice",
    },
    Row {
        program: "mail",
        shape: "To: \"%w\" <",
        example: "To: \"Tina Example\" <tina@example.org>",
    },
    Row {
        program: "pam",
        shape: " by %n(uid=",
        example: "pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)",
    },
    // sudo: the invoking user before the first ` : ` of a line holding
    // `TTY=` (sudo always writes it, `TTY=unknown` without a terminal), so
    // `a : b` in prose stays; `USER=` is a key, `PWD=/home/NAME` is
    // `home_dir`'s.
    Row {
        program: "sudo",
        shape: "%^%n : %sTTY=",
        example: "sudo[4000]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/apt update",
    },
    // util-linux su and runuser: `(to NEW) OLD on TTY`, optionally after
    // `FAILED SU `; both users. The terminal names the shape:
    // `(to be continued) later on` stays.
    Row {
        program: "su",
        shape: "%^(to %n) %n on %{pts/|tty|console|none|/dev/}",
        example: "su[4100]: (to root) alice on pts/0",
    },
    // cron: the crontab's owner (a system account such as root stays);
    // cronie also writes `CMDOUT` and `CMDEND`. The verb in capitals names
    // the shape: `(CRON) info (No MTA installed)` stays.
    Row {
        program: "cron",
        shape: "%^(%n) CMD (",
        example: "CRON[5001]: (carol) CMD (/home/carol/bin/backup.sh > /dev/null 2>&1)",
    },
    Row {
        program: "cron",
        shape: "%^(%n) CMDOUT (",
        example: "CROND[5003]: (carol) CMDOUT (backup done)",
    },
    Row {
        program: "cron",
        shape: "%^(%n) CMDEND (",
        example: "CROND[5003]: (carol) CMDEND (/home/carol/bin/backup.sh > /dev/null 2>&1)",
    },
    // dovecot: its services and passdbs/userdbs log as `NAME(user)` or
    // `NAME(user,ip,<session>)`; only these names, so `f(x)` and
    // `mapping(alice)` in application logs stay.
    Row {
        program: "dovecot",
        shape: "imap(%n%{)|,}",
        example: "imap(alice)<7><aBc>: Disconnected: Logged out in=12 out=345 deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0",
    },
    Row {
        program: "dovecot",
        shape: "pop3(%n%{)|,}",
        example: "pop3(alice)<7><aBc>: Disconnected: Logged out top=0/0, retr=1/1234, del=0/1, size=1234",
    },
    Row {
        program: "dovecot",
        shape: "lmtp(%n%{)|,}",
        example: "lmtp(alice)<7><aBc>: msgid=<20241010135536.1234@example.org>: saved mail to INBOX",
    },
    Row {
        program: "dovecot",
        shape: "lda(%n%{)|,}",
        example: "lda(alice)<7><aBc>: sieve: msgid=<20241010135536.1234@example.org>: stored mail into mailbox 'INBOX'",
    },
    Row {
        program: "dovecot",
        shape: "managesieve(%n%{)|,}",
        example: "managesieve(alice)<7><aBc>: Disconnected: Logged out bytes=12/345",
    },
    Row {
        program: "dovecot",
        shape: "submission(%n%{)|,}",
        example: "submission(alice)<7><aBc>: Disconnected: Logged out in=12 out=345",
    },
    Row {
        program: "dovecot",
        shape: "doveadm(%n%{)|,}",
        example: "doveadm(alice): Error: Syncing mailbox 'INBOX' failed: Mailbox doesn't exist",
    },
    Row {
        program: "dovecot",
        shape: "indexer-worker(%n%{)|,}",
        example: "indexer-worker(alice)<7><aBc>: Info: Indexed 12 messages in INBOX",
    },
    Row {
        program: "dovecot",
        shape: "quota-status(%n%{)|,}",
        example: "quota-status(alice): Debug: quota check for recipient",
    },
    Row {
        program: "dovecot",
        shape: "pam(%n%{)|,}",
        example: "auth-worker(4321): pam(alice,203.0.113.7,<aBc>): pam_authenticate() failed: Authentication failure (Password mismatch?)",
    },
    Row {
        program: "dovecot",
        shape: "passwd(%n%{)|,}",
        example: "auth: passwd(alice,203.0.113.7,<aBc>): unknown user",
    },
    Row {
        program: "dovecot",
        shape: "passwd-file(%n%{)|,}",
        example: "auth: passwd-file(alice,203.0.113.7,<aBc>): unknown user",
    },
    Row {
        program: "dovecot",
        shape: "shadow(%n%{)|,}",
        example: "auth: shadow(alice,203.0.113.7,<aBc>): unknown user",
    },
    Row {
        program: "dovecot",
        shape: "sql(%n%{)|,}",
        example: "auth-worker(4321): sql(alice,203.0.113.7,<aBc>): unknown user",
    },
    Row {
        program: "dovecot",
        shape: "ldap(%n%{)|,}",
        example: "auth: ldap(alice,203.0.113.7,<aBc>): unknown user",
    },
    Row {
        program: "dovecot",
        shape: "checkpassword(%n%{)|,}",
        example: "auth: checkpassword(alice,203.0.113.7,<aBc>): Login failed (status=1)",
    },
    Row {
        program: "dovecot",
        shape: "static(%n%{)|,}",
        example: "auth: static(alice,203.0.113.7,<aBc>): Password mismatch",
    },
    Row {
        program: "dovecot",
        shape: "oauth2(%n%{)|,}",
        example: "auth: oauth2(alice,203.0.113.7,<aBc>): oauth2 failed: Introspection failed: No username returned",
    },
    Row {
        program: "dovecot",
        shape: "lua(%n%{)|,}",
        example: "auth: lua(alice,203.0.113.7,<aBc>): unknown user",
    },
    Row {
        program: "dovecot",
        shape: "bsdauth(%n%{)|,}",
        example: "auth: bsdauth(alice,203.0.113.7,<aBc>): Password mismatch",
    },
    // shadow-utils: accounts in quoted phrases. Groups in membership lines
    // are shared groups and stay; `removed group` removes only a user's
    // private group, named after the user (see `shadow` for `name=`).
    Row {
        program: "useradd",
        shape: "add %q to group %Q",
        example: "useradd[4300]: add 'erin' to group 'sudo'",
    },
    Row {
        program: "useradd",
        shape: "add %q to shadow group %Q",
        example: "useradd[4300]: add `erin' to shadow group `sudo'",
    },
    Row {
        program: "userdel",
        shape: "delete %q from group %Q",
        example: "userdel[4310]: delete 'erin' from group 'sudo'",
    },
    Row {
        program: "userdel",
        shape: "delete %q from shadow group %Q",
        example: "userdel[4310]: delete 'erin' from shadow group 'sudo'",
    },
    Row {
        program: "userdel",
        shape: "removed group %q owned by %q",
        example: "userdel[4310]: removed group 'erin' owned by 'erin'",
    },
    Row {
        program: "userdel",
        shape: "removed shadow group %q owned by %q",
        example: "userdel[4310]: removed shadow group 'erin' owned by 'erin'",
    },
    Row {
        program: "usermod",
        shape: "change user name %q to %q",
        example: "usermod[4301]: change user name 'erin' to 'erin2'",
    },
    Row {
        program: "usermod",
        shape: "change %q to %q in group %Q",
        example: "usermod[4301]: change 'erin' to 'erin2' in group 'sudo'",
    },
    Row {
        program: "usermod",
        shape: "change %q to %q in shadow group %Q",
        example: "usermod[4301]: change 'erin' to 'erin2' in shadow group 'sudo'",
    },
    Row {
        program: "usermod",
        shape: "change admin %q to %q in shadow group %Q",
        example: "usermod[4301]: change admin 'erin' to 'erin2' in shadow group 'sudo'",
    },
    Row {
        program: "passwd",
        shape: "password for %q changed by %q",
        example: "passwd[4305]: password for 'erin' changed by 'root'",
    },
    Row {
        program: "passwd",
        shape: "password locked for %q",
        example: "passwd[4306]: password locked for 'erin'",
    },
    Row {
        program: "passwd",
        shape: "minimum age for %q",
        example: "passwd[4307]: now < minimum age for 'erin'",
    },
    Row {
        program: "chsh",
        shape: "change shell for %q",
        example: "chsh[4308]: can't change shell for 'erin'",
    },
    // FreeRADIUS 3 (`src/main/auth.c`, `rad_authlog`): `Login OK`,
    // `Login incorrect (MODULE: reason)`, `Invalid user`, then `: [NAME]
    // (from client ...)`. A machine's `[host/pc.example.org]` holds a `/`
    // and stays.
    Row {
        program: "freeradius",
        shape: ": [%n] (from client ",
        example: "(0) Login OK: [alice] (from client wifi-ap port 0 cli 02-00-00-00-00-01)",
    },
    // strongSwan (`eap_authenticator.c`): `received EAP identity '%Y'`.
    Row {
        program: "strongswan",
        shape: "received EAP identity %q",
        example: "10[IKE] received EAP identity 'alice'",
    },
    // Pure-FTPd (`messages_en.h`): `%s is now logged in` after the
    // `(?@HOST) [INFO] ` prefix, and `Authentication failed for user [%s]`.
    Row {
        program: "pure-ftpd",
        shape: "] %n is now logged in",
        example: "pure-ftpd: (?@203.0.113.7) [INFO] alice is now logged in",
    },
    Row {
        program: "pure-ftpd",
        shape: "Authentication failed for user [%n]",
        example: "pure-ftpd: (?@198.51.100.9) [WARNING] Authentication failed for user [mallory]",
    },
    // Squid's native access.log: the user (`-` without one) is the field
    // before the hierarchy code (`HIER_DIRECT/`, `HIER_NONE/`).
    Row {
        program: "squid",
        shape: " %n HIER_",
        example: "1728568536.123    245 203.0.113.7 TCP_MISS/200 1234 GET http://example.org/ alice HIER_DIRECT/192.0.2.10 text/html",
    },
    // Exim: `A=AUTHENTICATOR:ID` on `<=` lines (the authenticator's name is
    // the configuration's: Dovecot's here), and
    // `(set_id=ID)` when an authenticator fails.
    Row {
        program: "exim",
        shape: "(set_id=%n)",
        example: "dovecot_login authenticator failed for (WIN-ABC123) [198.51.100.9]:51234: 535 Incorrect authentication data (set_id=frank)",
    },
    Row {
        program: "exim",
        shape: " A=dovecot_%{plain|login}:%n ",
        example: "<= alice@example.org H=(laptop) [203.0.113.7] P=esmtpsa A=dovecot_plain:alice S=1234",
    },
    // Asterisk: the display name of a SIP From (`chan_sip`'s and PJSIP's
    // `Registration from` / `Request 'REGISTER' from`), and the account of
    // a security event (`res_security_log`).
    Row {
        program: "asterisk",
        shape: " from '\"%w\" <sip:",
        example: "res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '\"Alice Example\" <sip:alice@pbx.example.org>' failed for '203.0.113.7:5060'",
    },
    Row {
        program: "asterisk",
        shape: ",AccountID=\"%n\",",
        example: "SecurityEvent=\"InvalidAccountID\",Service=\"PJSIP\",EventVersion=\"1\",AccountID=\"mallory\",SessionID=\"a1b2c3d4\"",
    },
    // Jellyfin (`UserManager`): `Authentication request for {UserName}
    // has succeeded.` / `has been denied (IP: {IP}).` (Serilog quotes it).
    Row {
        program: "jellyfin",
        shape: "Authentication request for \"%n\" has ",
        example: "Jellyfin.Server.Implementations.Users.UserManager: Authentication request for \"alice\" has succeeded.",
    },
    // Paperless-ngx (`paperless/signals.py`): ``Login failed for user
    // `{username}` from IP `{client_ip}`.``
    Row {
        program: "paperless-ngx",
        shape: "Login failed for user `%n`",
        example: "[paperless.auth] Login failed for user `mallory` from IP `198.51.100.9`.",
    },
    // Mosquitto (`src/handle_connect.c`): "New client connected from %s:%d
    // as %s (p%d, c%d, k%d, u'%s')." (the client id, then the username).
    Row {
        program: "mosquitto",
        shape: ", u'%n').",
        example: "1728568536: New client connected from 203.0.113.7:51234 as sensor-42 (p2, c1, k60, u'alice').",
    },
    // SpamAssassin's spamd: "processing message %s for %s:%d" (the user and
    // their uid). Rows whose only literals are common words (Webmin's
    // ` login as `, spamd's `setuid to`, Minecraft's ` joined the game`,
    // CUPS's `Queued on "`) are left out: their keys made Teddy verify a
    // candidate in most clean lines (a clean line cost 28% more).
    Row {
        program: "spamd",
        shape: "> for %n:",
        example: "spamd[1234]: spamd: processing message <20241010135536.abc@example.org> for alice:1000",
    },
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seg {
    Lit(&'static str),
    Name,
    Words,
    Kept,
    /// A quoted name: rewritten (`%q`) or not (`%Q`).
    Quoted(bool),
    /// `%^`: the start of the text or a space before.
    Start,
    /// `%s`: text up to the key on the same line (see the module doc).
    Skip,
    /// `%{a|b}`: one of the literals, `|`-separated.
    OneOf(&'static str),
}

struct Compiled {
    segs: Vec<Seg>,
    /// The index in `segs` of the literal whose bytes the automaton finds.
    key: usize,
    /// Where the key literal starts relative to a hit of the pattern:
    /// `offset` bytes before it, one after if `quote` (see [`Key`]).
    offset: usize,
    quote: bool,
    program: &'static str,
}

/// How rare a byte is in log text: lower-case letters, digits and spaces
/// are everywhere; capitals and common punctuation less so; quotes,
/// brackets and the rest rarely.
fn rarity(c: u8) -> usize {
    match c {
        b'a'..=b'z' | b'0'..=b'9' | b' ' => 1,
        b'A'..=b'Z' | b'.' | b',' | b'-' | b'_' | b':' | b'/' | b'=' => 2,
        _ => 3,
    }
}

fn key_literal(segs: &[Seg], k: usize) -> &'static str {
    match segs[k] {
        Seg::Lit(l) => l,
        _ => unreachable!("keys are literals"),
    }
}

/// Where a shape's key is: the literal `seg`, and the automaton's pattern,
/// [`KEY_LEN`] bytes of it starting `offset` bytes into the literal as
/// keyed (`quote`: with the closing `'` of the quoted slot before it in
/// front, which the text holds there too).
#[derive(Debug, PartialEq, Eq)]
struct Key {
    seg: usize,
    quote: bool,
    offset: usize,
    pattern: String,
}

/// The key of a shape. The automaton's SIMD search (Teddy) fingerprints
/// each pattern's bytes and checks every position they match, so the
/// pattern is the window of [`KEY_LEN`] bytes, in any literal, whose bytes
/// are rarest: `map(` rather than `imap`, `' to ` (after a quoted slot,
/// led by its closing `'`) rather than `add `. Common English words (` to
/// `, ` in `, `pass`) would have every line of prose checked. Among windows
/// as rare, one already in `taken` (another row's) is preferred: rows then
/// share a pattern (cron's `) CMD (`, `) CMDOUT (`), and the table stays
/// under Teddy's 64 patterns. After `%s` the key is in the literal that
/// follows it (the skip is matched backward from there).
fn choose_key(segs: &[Seg], taken: &[String]) -> Key {
    let skip = segs.iter().position(|&g| g == Seg::Skip);
    let mut best: Option<((usize, bool, usize), Key)> = None;
    for k in 0..segs.len() {
        if !matches!(segs[k], Seg::Lit(_)) || skip.is_some_and(|sk| k != sk + 1) {
            continue;
        }
        let quote = k > 0 && matches!(segs[k - 1], Seg::Quoted(_));
        let text = format!("{}{}", if quote { "'" } else { "" }, key_literal(segs, k));
        // Literals are ASCII (checked by `parse`): every cut is a char
        // boundary.
        for offset in 0..=text.len().saturating_sub(KEY_LEN) {
            let Some(pattern) = text.get(offset..offset + KEY_LEN) else {
                continue;
            };
            let rare: usize = pattern.bytes().map(rarity).sum();
            let score = (rare, taken.iter().any(|t| t == pattern), text.len());
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                let pattern = pattern.to_owned();
                best = Some((
                    score,
                    Key {
                        seg: k,
                        quote,
                        offset,
                        pattern,
                    },
                ));
            }
        }
    }
    best.map(|(_, key)| key)
        .expect("every shape has a literal of 4 bytes or more")
}

/// The length of the automaton's patterns: Teddy fingerprints 4 bytes of
/// each (fewer if any pattern is shorter, and then every line is checked
/// far more often). Teddy takes at most 64 patterns (more and aho-corasick
/// falls back to a search that walks every byte); rows share patterns
/// (see [`choose_key`]) and a test keeps the table under the limit. The
/// rest of the key's literal is compared at each hit.
const KEY_LEN: usize = 4;

/// The compiled table: one search for every row's key.
pub struct Shapes {
    /// Where the CPU lacks AVX2: every row's pattern, leftmost-first:
    /// only this match kind gets the packed SIMD searcher (Teddy, SSSE3);
    /// a standard-semantics automaton (for overlapping matches) walks
    /// every byte, which was half the scrubber's time on lines with
    /// nothing to scrub. The patterns are distinct and all [`KEY_LEN`]
    /// bytes long, so at most one matches at a position: searching again
    /// from one byte past each hit finds every occurrence, overlapping
    /// ones included, each search SIMD-accelerated.
    first: KeySearch,
    /// With AVX2, the search itself: one pass of a Teddy-like
    /// fingerprint over the text, each position it lets through looked
    /// up in a table of the keys. It was a gate before Teddy (a line
    /// with a key paid the gate, then Teddy from the gate's candidate,
    /// then both again after each hit: ~880 instructions of a mixed
    /// line's ~9,500).
    gate: KeyGate,
    /// For each automaton pattern, the rows it keys.
    rows: Vec<Vec<Compiled>>,
    /// The rows that open with a word and `(` (dovecot's `imap(%n`,
    /// `pam(%n,`), by that word, sorted: found by each `(` of the text
    /// (memchr) and the word before it, not by the automaton. As 4-byte
    /// patterns (`map(`, `op3(`: lower-case letters) they filled Teddy's
    /// buckets so that most lines of prose became candidates to verify:
    /// about 900 more instructions on every line with nothing to scrub.
    calls: Vec<(&'static [u8], Vec<Compiled>)>,
    /// The longest word of `calls`.
    longest_call: usize,
}

/// The search for the shape keys: Teddy itself (aho-corasick's packed
/// searcher) where the CPU has it, else the automaton (which would use
/// Teddy too, through about 90 more instructions of dispatch per search:
/// a tenth of a clean line's search).
enum KeySearch {
    Packed(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
}

impl KeySearch {
    fn new(keys: &[String]) -> KeySearch {
        let packed = aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(keys)
            .build();
        match packed {
            Some(p) => KeySearch::Packed(p),
            None => KeySearch::Automaton(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(keys)
                    .expect("the shape keys compile"),
            ),
        }
    }

    /// The first key at or after `from`: where it starts, and which.
    #[inline]
    fn find(&self, s: &[u8], from: usize) -> Option<(usize, usize)> {
        let m = match self {
            KeySearch::Packed(p) => p.find_in(s, aho_corasick::Span::from(from..s.len()))?,
            KeySearch::Automaton(a) => a.find(aho_corasick::Input::new(s).span(from..s.len()))?,
        };
        Some((m.start(), m.pattern().as_usize()))
    }
}

/// A byte of a [`Shapes::calls`] word (dovecot's `indexer-worker`). The
/// prefilter (`anchor::Pairs::paren`) tells whether a `(` follows one.
pub(super) fn call_byte(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
}

/// The word of a row that opens with `WORD(` (see [`Shapes::calls`]).
fn call_word(segs: &[Seg]) -> Option<&'static [u8]> {
    let Some(&Seg::Lit(l)) = segs.first() else {
        return None;
    };
    let word = l.strip_suffix('(')?.as_bytes();
    (!word.is_empty() && word.iter().all(|&c| call_byte(c))).then_some(word)
}

/// Parses a shape; panics (at start, and in the tests) on a malformed one.
fn parse(shape: &'static str) -> Vec<Seg> {
    assert!(shape.is_ascii(), "shape {shape:?}: literals are ASCII");
    let mut segs = Vec::new();
    let mut rest = shape;
    while let Some(p) = rest.find('%') {
        if p > 0 {
            segs.push(Seg::Lit(&rest[..p]));
        }
        let mut width = 2;
        segs.push(match rest.as_bytes().get(p + 1) {
            Some(b'n') => Seg::Name,
            Some(b'w') => Seg::Words,
            Some(b'k') => Seg::Kept,
            Some(b'q') => Seg::Quoted(true),
            Some(b'Q') => Seg::Quoted(false),
            Some(b'^') => Seg::Start,
            Some(b's') => Seg::Skip,
            Some(b'{') => {
                let close = rest[p..]
                    .find('}')
                    .unwrap_or_else(|| panic!("shape {shape:?}: `%{{` without `}}`"));
                width = close + 1;
                Seg::OneOf(&rest[p + 2..p + close])
            }
            _ => panic!("shape {shape:?}: `%` must be followed by n, w, k, q, Q, ^, s or {{"),
        });
        rest = &rest[p + width..];
    }
    if !rest.is_empty() {
        segs.push(Seg::Lit(rest));
    }
    for (k, seg) in segs.iter().enumerate() {
        let lit_at = |j: Option<usize>| {
            j.and_then(|j| segs.get(j))
                .is_some_and(|g| matches!(g, Seg::Lit(_)))
        };
        match seg {
            Seg::Start => assert!(k == 0, "shape {shape:?}: `%^` comes first"),
            Seg::Skip => assert!(
                lit_at(k.checked_sub(1)) && lit_at(Some(k + 1)),
                "shape {shape:?}: `%s` stands between two literals"
            ),
            Seg::Words => assert!(
                lit_at(Some(k + 1)),
                "shape {shape:?}: `%w` ends at a literal"
            ),
            Seg::OneOf(alts) => assert!(
                !alts.is_empty() && alts.split('|').all(|a| !a.is_empty()),
                "shape {shape:?}: `%{{}}` lists literals"
            ),
            _ => {}
        }
    }
    assert!(
        segs.iter().filter(|&&g| g == Seg::Skip).count() <= 1,
        "shape {shape:?}: one `%s` at most"
    );
    segs
}

/// A byte of a `%n` or `%k` slot.
fn name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'$' | b'@' | b'+') || c >= 0x80
}

/// A byte of a slot: `%k` also holds `:` (`203.0.113.44:51234`).
fn slot_byte(slot: Seg, c: u8) -> bool {
    name_byte(c) || (slot == Seg::Kept && c == b':')
}

/// Longest slot accepted (Linux allows 32-byte names; e-mails are longer).
const MAX_SLOT: usize = 256;

impl Shapes {
    pub fn new() -> Shapes {
        let mut keys: Vec<String> = Vec::new();
        let mut rows: Vec<Vec<Compiled>> = Vec::new();
        let mut calls: Vec<(&'static [u8], Vec<Compiled>)> = Vec::new();
        for row in SHAPES {
            let segs = parse(row.shape);
            if let Some(word) = call_word(&segs) {
                let c = Compiled {
                    segs,
                    key: 0,
                    offset: 0,
                    quote: false,
                    program: row.program,
                };
                match calls.iter_mut().find(|(w, _)| *w == word) {
                    Some((_, rows)) => rows.push(c),
                    None => calls.push((word, vec![c])),
                }
                continue;
            }
            let Key {
                seg,
                quote,
                offset,
                pattern,
            } = choose_key(&segs, &keys);
            let c = Compiled {
                segs,
                key: seg,
                offset,
                quote,
                program: row.program,
            };
            match keys.iter().position(|k| *k == pattern) {
                Some(i) => rows[i].push(c),
                None => {
                    keys.push(pattern);
                    rows.push(vec![c]);
                }
            }
        }
        let first = KeySearch::new(&keys);
        let gate = KeyGate::new(
            &keys.iter().map(|k| k.as_bytes()).collect::<Vec<_>>(),
            rarity,
        );
        calls.sort_unstable_by_key(|(w, _)| *w);
        let longest_call = calls.iter().map(|(w, _)| w.len()).max().unwrap_or(0);
        Shapes {
            first,
            gate,
            rows,
            calls,
            longest_call,
        }
    }

    /// Whether [`Shapes::find`] may find something in `s`: a key, or a `(`
    /// for the `WORD(` rows. `false` is certain. `paren`: whether `s` may
    /// hold a `(` right after a [`call_byte`] (`false` only when certain,
    /// as `anchor::Pairs` tells): no row of `calls` matches without one.
    pub fn may_match(&self, s: &[u8], paren: bool) -> bool {
        (paren && !self.calls.is_empty() && memchr::memchr(b'(', s).is_some()) || {
            let mut any = false;
            self.each_key(s, |_, _| {
                any = true;
                ControlFlow::Break(())
            });
            any
        }
    }

    /// Calls `f(start, pattern)` for every key occurrence in `s`, in order,
    /// until it breaks: by the key gate's one pass where the CPU has AVX2,
    /// else by Teddy (or the automaton), searched again from one byte past
    /// each hit.
    #[inline]
    fn each_key(&self, s: &[u8], mut f: impl FnMut(usize, usize) -> ControlFlow<()>) {
        if self.gate.each_key(s, &mut f) {
            return;
        }
        let mut from = 0;
        while let Some((start, pattern)) = self.first.find(s, from) {
            if f(start, pattern).is_break() {
                return;
            }
            from = start + 1;
        }
    }

    /// Every match in `s`: the spans to rewrite (sorted, disjoint) with the
    /// program that names them. `paren` as for [`Shapes::may_match`]:
    /// without a `(`, the `WORD(` rows are not looked for.
    pub fn find(&self, s: &[u8], paren: bool) -> Vec<(usize, usize, &'static str)> {
        let mut spans: Vec<(usize, usize, &'static str)> = Vec::new();
        self.each_key(s, |start, pattern| {
            for row in &self.rows[pattern] {
                let ks = (start + usize::from(row.quote)).checked_sub(row.offset);
                // The spans go straight into `spans` (no vector per hit: a
                // hostile line holds a key every few bytes); a row that
                // fails to match takes back what it pushed.
                let mark = spans.len();
                if ks.and_then(|ks| row.match_at(s, ks, &mut spans)).is_none() {
                    spans.truncate(mark);
                }
            }
            ControlFlow::Continue(())
        });
        if paren && !self.calls.is_empty() {
            for p in memchr::memchr_iter(b'(', s) {
                // The word before the `(`; a longer run of word bytes is
                // no word of the table (and the look back stays short).
                let mut w = p;
                while w > 0 && p - w <= self.longest_call && call_byte(s[w - 1]) {
                    w -= 1;
                }
                if w == p || p - w > self.longest_call {
                    continue;
                }
                let Ok(i) = self
                    .calls
                    .binary_search_by(|(word, _)| (*word).cmp(&s[w..p]))
                else {
                    continue;
                };
                for row in &self.calls[i].1 {
                    let mark = spans.len();
                    if row.match_at(s, w, &mut spans).is_none() {
                        spans.truncate(mark);
                    }
                }
            }
        }
        spans.sort_unstable();
        let mut end = 0;
        spans.retain(|&(a, b, _)| {
            let keep = a >= end;
            if keep {
                end = b;
            }
            keep
        });
        spans
    }
}

impl Default for Shapes {
    fn default() -> Shapes {
        Shapes::new()
    }
}

impl Compiled {
    /// The row matched around its key, whose literal must start at
    /// `s[ks..]`: pushes the spans of its rewritten slots to `out`; `None`
    /// (with some perhaps pushed) when the row does not match.
    fn match_at(
        &self,
        s: &[u8],
        ks: usize,
        out: &mut Vec<(usize, usize, &'static str)>,
    ) -> Option<()> {
        let key = key_literal(&self.segs, self.key).as_bytes();
        if !s[ks..].starts_with(key) {
            return None;
        }
        // Forward from the key.
        let mut p = ks + key.len();
        let mut k = self.key + 1;
        while k < self.segs.len() {
            match self.segs[k] {
                Seg::Lit(l) => {
                    if !s[p..].starts_with(l.as_bytes()) {
                        return None;
                    }
                    p += l.len();
                }
                Seg::OneOf(alts) => p += one_of_at(s, p, alts)?,
                Seg::Quoted(rewritten) => {
                    let (a, b) = quoted_forward(s, p)?;
                    if rewritten {
                        out.push((a, b, self.program));
                    }
                    p = b + 1;
                }
                // `parse` puts `%^` first and `choose_key` keys the literal
                // after `%s`: neither is ever after the key.
                Seg::Start | Seg::Skip => unreachable!("matched backward"),
                slot => {
                    let end = slot_forward(s, p, slot, self.segs.get(k + 1).copied())?;
                    if slot != Seg::Kept {
                        out.push((p, end, self.program));
                    }
                    p = end;
                }
            }
            k += 1;
        }
        // Backward from the key.
        let mut p = ks;
        for k in (0..self.key).rev() {
            match self.segs[k] {
                Seg::Lit(l) => {
                    if !s[..p].ends_with(l.as_bytes()) {
                        return None;
                    }
                    p -= l.len();
                }
                Seg::OneOf(alts) => {
                    p -= alts
                        .split('|')
                        .find(|a| s[..p].ends_with(a.as_bytes()))?
                        .len();
                }
                Seg::Start => {
                    if p > 0 && s[p - 1] != b' ' {
                        return None;
                    }
                }
                Seg::Skip => {
                    let Seg::Lit(lead) = self.segs[k - 1] else {
                        unreachable!("`parse` puts a literal before `%s`")
                    };
                    p = skip_backward(s, p, lead.as_bytes(), key)?;
                }
                Seg::Quoted(rewritten) => {
                    let (a, b) = quoted_backward(s, p)?;
                    if rewritten {
                        out.push((a, b, self.program));
                    }
                    p = a - 1;
                }
                slot => {
                    // A pseudonym (`u:3f9a2b1c5d`) fills the slot whole: the
                    // name was rewritten by an earlier pass.
                    let b = match super::hash::pseudonym_len_before(s, p) {
                        Some(n) => p - n,
                        None => {
                            let mut b = p;
                            while b > 0 && p - b < MAX_SLOT && slot_byte(slot, s[b - 1]) {
                                b -= 1;
                            }
                            b
                        }
                    };
                    if b == p || (k == 0 && b > 0 && slot_byte(slot, s[b - 1])) {
                        return None;
                    }
                    if slot != Seg::Kept {
                        out.push((b, p, self.program));
                    }
                    p = b;
                }
            }
        }
        // A shape opening with a word starts a word.
        if let Some(Seg::Lit(l)) = self.segs.first() {
            let in_word = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.');
            if l.as_bytes()[0].is_ascii_alphanumeric() && p > 0 && in_word(s[p - 1]) {
                return None;
            }
        }
        Some(())
    }
}

/// The length of the alternative of `alts` (`a|b`) at `s[p..]`.
fn one_of_at(s: &[u8], p: usize, alts: &str) -> Option<usize> {
    alts.split('|')
        .find(|a| s[p..].starts_with(a.as_bytes()))
        .map(str::len)
}

/// `%s` before the key at `p`: where the nearest `lead` before it ends, on
/// the same line and within 512 bytes, with no other `key` between (a line
/// of keys costs a look back to the previous one each, not 512 bytes).
fn skip_backward(s: &[u8], p: usize, lead: &[u8], key: &[u8]) -> Option<usize> {
    const MAX_SKIP: usize = 512;
    let floor = p.saturating_sub(MAX_SKIP);
    let mut j = p;
    while j > floor {
        if s[j - 1] == b'\n' || s[..j].ends_with(key) {
            return None;
        }
        if s[..j].ends_with(lead) {
            return Some(j);
        }
        j -= 1;
    }
    None
}

/// Whether `c` opens a quoted name (`'x'`, or `` `x' `` of shadow 4.1).
fn opening_quote(c: u8) -> bool {
    c == b'\'' || c == b'`'
}

/// A quoted name opening at `p`: the span inside the quotes.
fn quoted_forward(s: &[u8], p: usize) -> Option<(usize, usize)> {
    if !opening_quote(*s.get(p)?) {
        return None;
    }
    let q = p + 1;
    let window = &s[q..(q + MAX_SLOT + 1).min(s.len())];
    let len = window.iter().position(|&c| c == b'\'' || c == b'\n')?;
    (len > 0 && window[len] == b'\'').then_some((q, q + len))
}

/// A quoted name closing right before `p`: the span inside the quotes.
fn quoted_backward(s: &[u8], p: usize) -> Option<(usize, usize)> {
    let close = p.checked_sub(1).filter(|&c| s[c] == b'\'')?;
    let window = &s[close.saturating_sub(MAX_SLOT + 1)..close];
    let len = window
        .iter()
        .rev()
        .position(|&c| opening_quote(c) || c == b'\n')?;
    let open = close - len - 1;
    (len > 0 && opening_quote(s[open])).then_some((open + 1, close))
}

/// The end of a slot starting at `p`, before the segment `next` (if any):
/// a literal or `%{a|b}`.
fn slot_forward(s: &[u8], p: usize, slot: Seg, next: Option<Seg>) -> Option<usize> {
    let window = &s[p..(p + MAX_SLOT).min(s.len())];
    if slot == Seg::Words {
        let Some(Seg::Lit(next)) = next else {
            return None;
        };
        let next = next.as_bytes();
        let end = memchr::memmem::find(window, next)?;
        let words = &window[..end];
        return (end > 0 && !words.contains(&b'\n') && !words.contains(&b'"')).then_some(p + end);
    }
    // A pseudonym (`u:3f9a2b1c5d`, holding a `:`) fills the slot whole: the
    // name was rewritten by an earlier pass.
    if let Some(n) = super::hash::pseudonym_len_at(s, p) {
        return Some(p + n);
    }
    let run = window.iter().take_while(|&&c| slot_byte(slot, c)).count();
    if run == 0 {
        return None;
    }
    // The longest run the next literal follows (a name may end in `.`
    // before a literal `.`).
    let followed = |n: usize| match next {
        Some(Seg::Lit(l)) => s[p + n..].starts_with(l.as_bytes()),
        Some(Seg::OneOf(alts)) => one_of_at(s, p + n, alts).is_some(),
        _ => true,
    };
    (1..=run).rev().find(|&n| followed(n)).map(|n| p + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One table for the proptests (building it per case took most of
    /// their time).
    fn built() -> &'static Shapes {
        static BUILT: std::sync::OnceLock<Shapes> = std::sync::OnceLock::new();
        BUILT.get_or_init(Shapes::new)
    }

    /// The table's Teddy keys, chosen as [`Shapes::new`] chooses them, so
    /// the proptests build texts from the keys of today's rows.
    fn table_keys() -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for row in SHAPES {
            let segs = parse(row.shape);
            if call_word(&segs).is_some() {
                continue;
            }
            let key = choose_key(&segs, &keys).pattern;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    /// The table searched as on a CPU without AVX2: Teddy (the search
    /// before the gate became it), again one past each hit.
    fn teddy() -> &'static Shapes {
        static BUILT: std::sync::OnceLock<Shapes> = std::sync::OnceLock::new();
        BUILT.get_or_init(|| {
            let s = Shapes::new();
            Shapes {
                gate: s.gate.without_simd(),
                ..s
            }
        })
    }

    /// Every key occurrence [`Shapes::find`] is told of in `s`.
    fn hits(shapes: &Shapes, s: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        shapes.each_key(s, |p, k| {
            out.push((p, k));
            ControlFlow::Continue(())
        });
        out
    }

    /// The gate's search and Teddy's agree on `s`: the key occurrences,
    /// what `find` finds and `may_match`.
    fn agree(s: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        let (gate, teddy) = (built(), teddy());
        proptest::prop_assert_eq!(hits(gate, s), hits(teddy, s));
        for paren in [false, true] {
            proptest::prop_assert_eq!(gate.find(s, paren), teddy.find(s, paren));
            proptest::prop_assert_eq!(gate.may_match(s, paren), teddy.may_match(s, paren));
        }
        Ok(())
    }

    /// Every row finds a name in its own example, and only where a slot is.
    #[test]
    fn every_example_matches_its_row() {
        let shapes = Shapes::new();
        for row in SHAPES {
            let found = shapes.find(row.example.as_bytes(), true);
            assert!(
                found.iter().any(|&(_, _, p)| p == row.program),
                "{}: {:?} finds nothing in {:?}",
                row.program,
                row.shape,
                row.example
            );
        }
    }

    /// The key gate's search finds what Teddy finds, on the corpus; and
    /// its fingerprint lets few positions through to the exact check (a
    /// look-up each; what it is for).
    #[test]
    fn the_gate_searches_as_teddy() {
        let shapes = built();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/scrub");
        let (mut bytes, mut let_through, mut keys) = (0, 0, 0);
        for f in std::fs::read_dir(&dir).expect("corpus") {
            let p = f.expect("corpus entry").path();
            if p.extension().is_none_or(|e| e != "txt") {
                continue;
            }
            for line in std::fs::read_to_string(&p).expect("corpus file").lines() {
                let line = line.as_bytes();
                agree(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
                bytes += line.len();
                keys += hits(teddy(), line).len();
                let_through += shapes.gate.candidates(line).map_or(0, |c| c.len());
            }
        }
        if shapes.gate.simd() {
            assert!(
                let_through <= keys + bytes / 40,
                "the gate let {let_through} positions of {bytes} through ({keys} keys)"
            );
        }
    }

    /// Every row's example, cut at every byte from either end: keys and
    /// rows whole, cut and near.
    #[test]
    fn the_gate_searches_as_teddy_on_examples() {
        for row in SHAPES {
            let e = row.example.as_bytes();
            for cut in 0..e.len() {
                agree(&e[cut..]).unwrap_or_else(|err| panic!("{err}: {:?}", &e[cut..]));
                agree(&e[..cut]).unwrap_or_else(|err| panic!("{err}: {:?}", &e[..cut]));
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn the_gate_searches_as_teddy_in_pieces(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Strategy::prop_map(
                        proptest::sample::select(table_keys()),
                        |k| k,
                    ),
                    proptest::strategy::Strategy::prop_map(
                        proptest::sample::select(SHAPES.iter().map(|r| r.example).collect::<Vec<_>>()),
                        |e| e.to_owned(),
                    ),
                    "[ -~]{0,6}",
                    "\\PC{0,3}",
                ],
                0..40,
            ),
            cut in 0usize..4,
        ) {
            let s = pieces.concat();
            agree(&s.as_bytes()[cut.min(s.len())..])?;
        }

        /// Any bytes.
        #[test]
        fn the_gate_searches_as_teddy_on_bytes(s in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            agree(&s)?;
        }
    }

    #[test]
    fn keys_are_rare() {
        let shapes = Shapes::new();
        // `table_keys` (the proptests' pieces) stays the table's keys.
        assert_eq!(table_keys().len(), shapes.rows.len());
        let keys: Vec<String> = SHAPES
            .iter()
            .map(|r| choose_key(&parse(r.shape), &[]).pattern)
            .collect();
        for k in &keys {
            assert!(k.len() >= 4, "{k:?}");
            for common in [" to ", " in ", " for ", "add ", " r "] {
                assert!(!k.starts_with(common), "{k:?}");
            }
        }
        assert_eq!(
            choose_key(&parse("add %q to group %Q"), &[]).pattern,
            "' to"
        );
        // Rows opening with `WORD(` are found by their `(`, not by Teddy.
        assert!(call_word(&parse("imap(%n%{)|,}")).is_some());
        assert!(call_word(&parse("by %n(uid=")).is_none());
        assert!(shapes.calls.len() >= 20, "{}", shapes.calls.len());
        assert_eq!(choose_key(&parse("%^%n : %sTTY="), &[]).pattern, "TTY=");
        // Teddy, the SIMD search, takes 64 patterns at most.
        assert!(shapes.rows.len() <= 64, "{} patterns", shapes.rows.len());
        #[cfg(target_arch = "x86_64")]
        assert!(
            matches!(shapes.first, KeySearch::Packed(_)),
            "Teddy, not the automaton"
        );
        assert!(shapes
            .find(b"add it to the group to go in for a walk", true)
            .is_empty());
    }

    #[test]
    fn marks() {
        let shapes = Shapes::new();
        let spans = |s: &str| -> Vec<String> {
            shapes
                .find(s.as_bytes(), true)
                .iter()
                .map(|&(a, b, _)| s[a..b].to_owned())
                .collect()
        };
        // `%s`: the nearest ` : ` before `TTY=`, on the same line.
        assert_eq!(spans("bob : x : y ; TTY=pts/0"), ["x"]);
        assert_eq!(spans("bob : x\n; TTY=pts/0"), Vec::<String>::new());
        assert_eq!(spans("bob : TTY=1 ; TTY=2"), ["bob"]);
        assert_eq!(spans("a : b"), Vec::<String>::new());
        // `%^`: start of the text or after a space.
        assert_eq!(spans("(alice) CMD (x)"), ["alice"]);
        assert_eq!(spans("f(alice) CMD (x)"), Vec::<String>::new());
        // `%{a|b}`.
        assert_eq!(spans("imap(alice): x pam(bob,1.2.3.4)"), ["alice", "bob"]);
        assert_eq!(
            spans("imap(alice x) x_pam(bob) mapping(c)"),
            Vec::<String>::new()
        );
        // A pseudonym before a key fills the slot (not its hex digits).
        assert_eq!(spans("u:3f9a2b1c5d : TTY=x"), ["u:3f9a2b1c5d"]);
        assert_eq!(
            spans("(to u:3f9a2b1c5d) u:3f9a2b1c5d on tty1"),
            ["u:3f9a2b1c5d", "u:3f9a2b1c5d"]
        );
    }

    #[test]
    fn near_misses() {
        let shapes = Shapes::new();
        for s in [
            "xAuthenticated as kate via LDAP",
            "role \"\" does not exist",
            "From: \"a\nb\" <x@y.org>",
            "GET /users/ HTTP/1.1",
        ] {
            assert!(shapes.find(s.as_bytes(), true).is_empty(), "{s}");
        }
        let s = b"completed GET /dave/dotfiles/src/branch/main";
        let found = shapes.find(s, true);
        assert_eq!(found.len(), 1);
        assert_eq!(&s[found[0].0..found[0].1], b"dave");
    }
}
