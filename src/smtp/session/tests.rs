//! The state machine's table tests: the transaction, sequence errors,
//! limits, access (networks, TLS, AUTH) and address rules.

mod dialogue {
    use super::super::*;

    fn session() -> Session {
        Session::new(
            "relay.test".into(),
            Limits {
                max_message_size: 1000,
                max_recipients: 2,
                max_errors: 3,
                max_header_size: 1000,
                max_transactions: 3,
                postmaster: "postmaster@relay.test".into(),
            },
            Capabilities::standard(1000),
            Client::trusted(),
        )
    }

    fn run(s: &mut Session, line: &str) -> Action {
        let bytes = format!("{line}\r\n").into_bytes();
        let mut it = bytes.iter();
        s.command(Request::parse(&mut it))
    }

    fn code(a: &Action) -> u16 {
        match a {
            Action::Reply(r) | Action::Close(r) => r.code,
            Action::StartData => 354,
            Action::StartTls => 220,
            Action::Auth { .. } => 334,
            Action::Discard { reply, .. } => reply.code,
        }
    }

    #[test]
    fn full_transaction_reaches_data() {
        let mut s = session();
        assert_eq!(code(&run(&mut s, "EHLO client")), 250);
        assert_eq!(code(&run(&mut s, "MAIL FROM:<>")), 250);
        assert_eq!(code(&run(&mut s, "RCPT TO:<a@b.example>")), 250);
        assert_eq!(run(&mut s, "DATA"), Action::StartData);
        assert_eq!(
            s.envelope(),
            Envelope {
                mail_from: String::new(),
                rcpt_to: vec!["a@b.example".into()]
            }
        );
    }

    #[test]
    fn quoted_local_parts_are_accepted_and_kept_in_rfc5321_form() {
        let mut s = session();
        run(&mut s, "EHLO client");
        assert_eq!(code(&run(&mut s, "MAIL FROM:<\"s x\"@a.example>")), 250);
        assert_eq!(
            code(&run(&mut s, "RCPT TO:<\"john doe\"@example.com>")),
            250
        );
        assert_eq!(code(&run(&mut s, "RCPT TO:<\"a,b\"@example.com>")), 250);
        assert_eq!(code(&run(&mut s, "RCPT TO:<john doe@example.com>")), 553);
        assert_eq!(
            s.envelope(),
            Envelope {
                mail_from: "\"s x\"@a.example".into(),
                rcpt_to: vec![
                    "\"john doe\"@example.com".into(),
                    "\"a,b\"@example.com".into()
                ]
            }
        );
    }

    #[test]
    fn sequence_errors_answer_503() {
        let mut s = session();
        assert_eq!(code(&run(&mut s, "MAIL FROM:<a@b>")), 503);
        run(&mut s, "HELO c");
        assert_eq!(code(&run(&mut s, "RCPT TO:<a@b>")), 503);
        assert_eq!(code(&run(&mut s, "DATA")), 503);
    }

    #[test]
    fn recipient_cap_answers_452_without_counting_an_error() {
        let mut s = session();
        run(&mut s, "EHLO c");
        run(&mut s, "MAIL FROM:<a@b>");
        for _ in 0..5 {
            run(&mut s, "RCPT TO:<x@y>");
        }
        run(&mut s, "RCPT TO:<z@y>");
        assert_eq!(code(&run(&mut s, "RCPT TO:<w@y>")), 452);
        assert_eq!(s.envelope().rcpt_to.len(), 2);
    }

    #[test]
    fn declared_size_over_limit_is_refused_at_mail() {
        let mut s = session();
        run(&mut s, "EHLO c");
        assert_eq!(code(&run(&mut s, "MAIL FROM:<a@b> SIZE=5000")), 552);
        assert_eq!(code(&run(&mut s, "MAIL FROM:<a@b> SIZE=500")), 250);
    }

    #[test]
    fn endless_noops_end_the_session_but_a_transaction_resets_the_count() {
        let mut s = session();
        run(&mut s, "EHLO c");
        for _ in 0..JUNK_LIMIT {
            assert_eq!(code(&run(&mut s, "NOOP")), 250);
        }
        run(&mut s, "MAIL FROM:<a@b>");
        for _ in 0..JUNK_LIMIT {
            assert_eq!(code(&run(&mut s, "RSET")), 250);
        }
        // max_errors is 3: the 4th junk command past the limit closes.
        for _ in 0..3 {
            assert!(matches!(run(&mut s, "NOOP"), Action::Reply(_)));
        }
        assert!(matches!(run(&mut s, "NOOP"), Action::Close(r) if r.code == 421));
    }

    #[test]
    fn too_many_errors_close_the_session() {
        let mut s = session();
        for _ in 0..3 {
            assert!(matches!(run(&mut s, "BOGUS"), Action::Reply(_)));
        }
        assert!(matches!(run(&mut s, "BOGUS"), Action::Close(r) if r.code == 421));
    }

    #[test]
    fn bdat_gets_502_and_its_chunk_is_dropped_or_the_session_closed() {
        let mut s = session();
        run(&mut s, "EHLO c");
        assert_eq!(
            run(&mut s, "BDAT 10 LAST"),
            Action::Discard {
                reply: reply::not_implemented("BDAT"),
                bytes: 10
            }
        );
        assert!(matches!(run(&mut s, "BDAT 1001"), Action::Close(r) if r.code == 421));
    }

    #[test]
    fn ehlo_advertises_the_capabilities_value() {
        let mut s = session();
        let Action::Reply(r) = run(&mut s, "EHLO c") else {
            panic!("EHLO must be answered")
        };
        assert_eq!(r.lines, Capabilities::standard(1000).lines());
        s.set_capabilities(Capabilities {
            starttls: true,
            ..Capabilities::standard(1000)
        });
        let Action::Reply(r) = run(&mut s, "EHLO c") else {
            panic!("EHLO must be answered")
        };
        assert!(r.lines.contains(&"STARTTLS".to_string()));
    }
}

mod access_tests {
    use super::super::*;

    fn session(client: Client, starttls: bool) -> Session {
        let limits = Limits {
            max_message_size: 1000,
            max_recipients: 2,
            max_errors: 10,
            max_header_size: 1000,
            max_transactions: 3,
            postmaster: "postmaster@relay.test".into(),
        };
        let capabilities = Capabilities {
            starttls,
            ..Capabilities::standard(1000)
        };
        Session::new("relay.test".into(), limits, capabilities, client)
    }

    fn run(s: &mut Session, line: &str) -> Action {
        let bytes = format!("{line}\r\n").into_bytes();
        s.command(Request::parse(&mut bytes.iter()))
    }

    fn reply(a: Action) -> (u16, &'static str) {
        match a {
            Action::Reply(r) | Action::Close(r) => (r.code, r.status),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn an_untrusted_client_gets_530_at_mail() {
        let mut s = session(Client::default(), false);
        run(&mut s, "EHLO c");
        assert_eq!(
            reply(run(&mut s, "MAIL FROM:<a@b.example>")),
            (530, "5.7.0")
        );
        assert!(!s.in_transaction());
    }

    #[test]
    fn tls_required_refuses_mail_until_the_handshake_and_starttls_resets_the_session() {
        let client = Client {
            trusted: true,
            tls_required: true,
            ..Client::default()
        };
        let mut s = session(client, true);
        run(&mut s, "EHLO c");
        assert_eq!(
            reply(run(&mut s, "MAIL FROM:<a@b.example>")),
            (530, "5.7.0")
        );
        assert_eq!(run(&mut s, "STARTTLS"), Action::StartTls);
        s.restart_with_tls(Capabilities::standard(1000));
        assert_eq!(
            reply(run(&mut s, "MAIL FROM:<a@b.example>")).0,
            503,
            "EHLO again first"
        );
        run(&mut s, "EHLO c");
        assert_eq!(reply(run(&mut s, "MAIL FROM:<a@b.example>")).0, 250);
        assert!(s.client().tls);
    }

    #[test]
    fn starttls_is_refused_when_not_offered_already_done_or_inside_a_transaction() {
        let mut s = session(Client::trusted(), false);
        run(&mut s, "EHLO c");
        assert_eq!(reply(run(&mut s, "STARTTLS")).0, 502);
        let mut s = session(Client::trusted(), true);
        run(&mut s, "EHLO c");
        run(&mut s, "MAIL FROM:<a@b.example>");
        assert_eq!(reply(run(&mut s, "STARTTLS")).0, 503);
        let tls = Client {
            tls: true,
            ..Client::trusted()
        };
        let mut s = session(tls, true);
        run(&mut s, "EHLO c");
        assert_eq!(reply(run(&mut s, "STARTTLS")).0, 502);
    }
}

mod auth_tests {
    use super::super::*;

    fn session(client: Client) -> Session {
        let limits = Limits {
            max_message_size: 1000,
            max_recipients: 2,
            max_errors: 10,
            max_header_size: 1000,
            max_transactions: 3,
            postmaster: "postmaster@relay.test".into(),
        };
        let mut capabilities = Capabilities::standard(1000);
        if client.offers_auth() {
            capabilities.auth = vec!["PLAIN".into(), "LOGIN".into()];
        }
        Session::new("relay.test".into(), limits, capabilities, client)
    }

    fn run(s: &mut Session, line: &str) -> Action {
        let bytes = format!("{line}\r\n").into_bytes();
        s.command(Request::parse(&mut bytes.iter()))
    }

    fn code(a: Action) -> (u16, &'static str) {
        match a {
            Action::Reply(r) | Action::Close(r) => (r.code, r.status),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn outside() -> Client {
        Client {
            auth_available: true,
            ..Client::default()
        }
    }

    #[test]
    fn auth_waits_for_tls_unless_plaintext_is_allowed() {
        let mut s = session(outside());
        run(&mut s, "EHLO c");
        assert_eq!(code(run(&mut s, "AUTH PLAIN AGEAYg==")), (538, "5.7.11"));
        let mut s = session(Client {
            tls: true,
            ..outside()
        });
        run(&mut s, "EHLO c");
        assert_eq!(
            run(&mut s, "AUTH PLAIN AGEAYg=="),
            Action::Auth {
                mechanism: Mechanism::Plain,
                initial: Some("AGEAYg==".into())
            }
        );
        assert_eq!(
            run(&mut s, "AUTH LOGIN"),
            Action::Auth {
                mechanism: Mechanism::Login,
                initial: None
            }
        );
        assert_eq!(code(run(&mut s, "AUTH CRAM-MD5")), (504, "5.5.4"));
        let mut none = session(Client::trusted());
        run(&mut none, "EHLO c");
        assert_eq!(code(run(&mut none, "AUTH PLAIN AGEAYg==")).0, 502);
    }

    #[test]
    fn an_authenticated_user_sends_only_from_allowed_addresses() {
        let mut s = session(Client {
            tls: true,
            ..outside()
        });
        run(&mut s, "EHLO c");
        assert_eq!(
            code(run(&mut s, "MAIL FROM:<billing@example.com>")),
            (530, "5.7.0")
        );
        s.authenticated(User {
            name: "billing".into(),
            allowed_from: vec!["billing@example.com".into()],
            credential: crate::spool::Credential::User("billing".into()),
            message_stream: None,
        });
        assert_eq!(
            code(run(&mut s, "MAIL FROM:<ceo@example.com>")),
            (553, "5.7.1")
        );
        assert_eq!(code(run(&mut s, "MAIL FROM:<billing@example.com>")).0, 250);
        assert_eq!(code(run(&mut s, "AUTH PLAIN AGEAYg==")).0, 503);
    }
}

mod limit_tests {
    use super::super::*;

    fn session() -> Session {
        let limits = Limits {
            max_message_size: 1000,
            max_recipients: 1,
            max_errors: 2,
            max_header_size: 1000,
            max_transactions: 2,
            postmaster: "postmaster@relay.test".into(),
        };
        Session::new(
            "relay.test".into(),
            limits,
            Capabilities::standard(1000),
            Client::trusted(),
        )
    }

    fn run(s: &mut Session, line: &str) -> Action {
        let bytes = format!("{line}\r\n").into_bytes();
        s.command(Request::parse(&mut bytes.iter()))
    }

    #[test]
    fn transactions_past_the_cap_close_the_session() {
        let mut s = session();
        run(&mut s, "EHLO c");
        for _ in 0..2 {
            assert!(
                matches!(run(&mut s, "MAIL FROM:<a@b.example>"), Action::Reply(r) if r.code == 250)
            );
            run(&mut s, "RSET");
        }
        assert!(
            matches!(run(&mut s, "MAIL FROM:<a@b.example>"), Action::Close(r) if r.code == 421 && r.status == "4.7.0")
        );
    }

    #[test]
    fn endless_ehlo_or_over_cap_recipients_end_the_session() {
        let mut s = session();
        run(&mut s, "EHLO c");
        let mut closed = false;
        for _ in 0..=JUNK_LIMIT + 2 {
            if matches!(run(&mut s, "EHLO c"), Action::Close(_)) {
                closed = true;
                break;
            }
        }
        assert!(closed, "EHLO loop cut off");

        let mut s = session();
        run(&mut s, "EHLO c");
        run(&mut s, "MAIL FROM:<a@b.example>");
        run(&mut s, "RCPT TO:<x@y.example>");
        let mut closed = false;
        for _ in 0..=JUNK_LIMIT + 2 {
            match run(&mut s, "RCPT TO:<z@y.example>") {
                Action::Close(_) => {
                    closed = true;
                    break;
                }
                Action::Reply(r) => assert_eq!(r.code, 452),
                other => panic!("{other:?}"),
            }
        }
        assert!(closed, "over-cap RCPT loop cut off");
    }
}

mod address_tests {
    use super::super::*;

    fn session() -> Session {
        let limits = Limits {
            max_message_size: 1000,
            max_recipients: 10,
            max_errors: 10,
            max_header_size: 1000,
            max_transactions: 10,
            postmaster: "admin@example.com".into(),
        };
        Session::new(
            "relay.test".into(),
            limits,
            Capabilities::standard(1000),
            Client::trusted(),
        )
    }

    fn code(s: &mut Session, line: &str) -> (u16, &'static str) {
        let bytes = format!("{line}\r\n").into_bytes();
        match s.command(crate::smtp::codec::parse_command(&bytes)) {
            Action::Reply(r) | Action::Close(r) => (r.code, r.status),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_ascii_addresses_need_the_smtputf8_parameter() {
        let mut s = session();
        code(&mut s, "EHLO c");
        assert_eq!(code(&mut s, "MAIL FROM:<zoë@example.com>"), (553, "5.6.7"));
        assert_eq!(code(&mut s, "MAIL FROM:<a@example.com>").0, 250);
        assert_eq!(code(&mut s, "RCPT TO:<jürgen@example.de>"), (553, "5.6.7"));
        code(&mut s, "RSET");
        assert_eq!(code(&mut s, "MAIL FROM:<zoë@example.com> SMTPUTF8").0, 250);
        assert_eq!(code(&mut s, "RCPT TO:<jürgen@example.de>").0, 250);
    }

    #[test]
    fn postmaster_is_always_accepted_and_goes_to_the_admin() {
        let mut s = session();
        code(&mut s, "EHLO c");
        code(&mut s, "MAIL FROM:<a@example.com>");
        assert_eq!(code(&mut s, "RCPT TO:<Postmaster>"), (250, "2.1.5"));
        assert_eq!(s.envelope().rcpt_to, ["admin@example.com"]);
    }
}
