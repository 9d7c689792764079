//! Local names: mail from local programs (`sendmail`, loopback SMTP clients)
//! names local users bare (`root`, `www-data`). [`qualify`] gives a bare name
//! the `[local] domain`; [`route_recipient`] sends local users' mail to
//! `[local] admin_address` when one is set. Both are pure; an address that
//! already has a domain, and the null sender, pass through unchanged.

/// A local user's name: not empty, no domain.
pub fn is_local(addr: &str) -> bool {
    !addr.is_empty() && !addr.contains('@')
}

/// `root` -> `root@<domain>`; an address with a domain, or "" (the null
/// sender), is returned as it is.
pub fn qualify(addr: &str, domain: &str) -> String {
    if is_local(addr) {
        format!("{addr}@{domain}")
    } else {
        addr.to_string()
    }
}

/// Where mail for envelope recipient `addr` goes: a local user's to `admin`
/// when set, else to the qualified name; any other address unchanged.
pub fn route_recipient(addr: &str, domain: &str, admin: Option<&str>) -> String {
    match admin {
        Some(admin) if is_local(addr) => admin.to_string(),
        _ => qualify(addr, domain),
    }
}

/// The host's FQDN: the kernel's host name when it has a dot, else the
/// first dotted name `/etc/hosts` gives for it, else the bare host name.
pub fn host_fqdn() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    fqdn_from(&host, &hosts)
}

/// Pure part of [`host_fqdn`].
pub fn fqdn_from(host: &str, hosts_file: &str) -> String {
    if host.is_empty() {
        return "localhost".into();
    }
    if host.contains('.') {
        return host.to_string();
    }
    hosts_file
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .filter_map(|l| {
            let names: Vec<&str> = l.split_whitespace().skip(1).collect();
            names.contains(&host).then_some(names)
        })
        .flatten()
        .find(|n| n.contains('.') && n.split('.').next() == Some(host))
        .unwrap_or(host)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_get_the_local_domain_and_others_pass_through() {
        let cases = [
            ("root", "root@host.example"),
            ("www-data", "www-data@host.example"),
            ("app@example.com", "app@example.com"),
            ("", ""),
        ];
        for (addr, want) in cases {
            assert_eq!(qualify(addr, "host.example"), want, "{addr:?}");
        }
    }

    #[test]
    fn local_users_mail_goes_to_the_admin_address_when_set() {
        let admin = Some("ops@example.com");
        let cases = [
            ("root", admin, "ops@example.com"),
            ("root", None, "root@host.example"),
            ("user@example.org", admin, "user@example.org"),
            ("postmaster@host.example", admin, "postmaster@host.example"),
        ];
        for (addr, admin, want) in cases {
            assert_eq!(route_recipient(addr, "host.example", admin), want);
        }
    }

    #[test]
    fn fqdn_comes_from_the_host_name_or_etc_hosts() {
        let hosts = "127.0.0.1 localhost\n127.0.1.1 web1.example.com web1 # debian\n";
        let cases = [
            ("web1", hosts, "web1.example.com"),
            ("web1.corp.example", hosts, "web1.corp.example"),
            ("db", hosts, "db"),
            ("web1", "127.0.1.1 web1\n", "web1"),
            ("web1", "# 127.0.1.1 web1.example.com web1\n", "web1"),
            ("", hosts, "localhost"),
        ];
        for (host, file, want) in cases {
            assert_eq!(fqdn_from(host, file), want, "{host:?}");
        }
    }
}
