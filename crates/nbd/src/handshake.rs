//! Option haggling without I/O: the state of one connection's fixed newstyle negotiation and
//! the answer to each option.
//!
//! The caller reads an option, hands its code and data to [`Negotiation::option`], writes the
//! bytes appended to `out` and acts on the returned [`Next`]. Export names are capabilities, so
//! `NBD_OPT_LIST` lists nothing and an unknown (or revoked) name is indistinguishable from a
//! name that never existed.

use crate::command::TransmissionParams;
use crate::proto::{
    self, BASE_ALLOCATION, ClientOption, InfoRequest, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE,
    MetaContextRequest, OptionError, PREFERRED_BLOCK_SIZE, info, opt, rep, transmission_flags,
};
use crate::{Export, ExportCatalog};

/// The metadata context id this server gives `base:allocation`.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// Whether the server insists on TLS before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// NOTLS mode: `NBD_OPT_STARTTLS` is refused with `NBD_REP_ERR_POLICY`.
    Plain,
    /// FORCEDTLS mode: every option but `NBD_OPT_STARTTLS` and `NBD_OPT_ABORT` is refused with
    /// `NBD_REP_ERR_TLS_REQD` until TLS is up.
    Required,
}

/// What the caller does after writing the option's reply.
#[derive(Debug)]
pub enum Next {
    /// Read the next option.
    Continue,
    /// Upgrade the connection to TLS, then call [`Negotiation::tls_started`] and go on.
    StartTls,
    /// Close the connection (after `NBD_OPT_ABORT`, or when the protocol leaves no way to
    /// report an error, as for `NBD_OPT_EXPORT_NAME`).
    Close,
    /// Enter the transmission phase.
    Transmit(Box<Negotiated>),
}

/// The result of a successful negotiation.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// The export being served.
    pub export: Export,
    /// The name it was opened with.
    pub name: String,
    /// The transmission flags that were sent.
    pub flags: u16,
    /// What the transmission phase checks requests against.
    pub params: TransmissionParams,
}

/// The negotiation state of one connection.
#[derive(Debug, Clone)]
pub struct Negotiation {
    policy: TlsPolicy,
    tls_active: bool,
    no_zeroes: bool,
    structured: bool,
    /// The export name `base:allocation` was selected for by the last `SET_META_CONTEXT`.
    meta_export: Option<String>,
}

impl Negotiation {
    /// A fresh negotiation after the client flags were accepted.
    pub fn new(policy: TlsPolicy, client: proto::ClientFlags) -> Self {
        Self {
            policy,
            tls_active: false,
            no_zeroes: client.no_zeroes,
            structured: false,
            meta_export: None,
        }
    }

    /// TLS is up: earlier negotiation state is forgotten, as the spec requires.
    pub fn tls_started(&mut self) {
        self.tls_active = true;
        self.structured = false;
        self.meta_export = None;
    }

    /// Whether TLS is up.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    fn tls_missing(&self) -> bool {
        self.policy == TlsPolicy::Required && !self.tls_active
    }

    /// Answers option `code` with `data`, appending the reply bytes to `out`.
    /// `catalog` is consulted only for `NBD_OPT_GO`, `NBD_OPT_INFO` and `NBD_OPT_EXPORT_NAME`.
    pub fn option(
        &mut self,
        code: u32,
        data: &[u8],
        catalog: &dyn ExportCatalog,
        out: &mut Vec<u8>,
    ) -> Next {
        if self.tls_missing() {
            match code {
                opt::STARTTLS | opt::ABORT => {}
                opt::EXPORT_NAME => {
                    tracing::warn!("NBD_OPT_EXPORT_NAME before STARTTLS; closing");
                    return Next::Close;
                }
                _ => {
                    tracing::debug!(option = code, "option before STARTTLS refused");
                    proto::put_option_reply(out, code, rep::ERR_TLS_REQD, b"TLS is required");
                    return Next::Continue;
                }
            }
        }
        let parsed = match proto::parse_option(code, data) {
            Ok(p) => p,
            Err(e) => return self.invalid(code, &e, out),
        };
        match parsed {
            ClientOption::ExportName(name) => self.export_name(name, catalog, out),
            ClientOption::Abort => {
                proto::put_option_reply(out, code, rep::ACK, b"");
                Next::Close
            }
            ClientOption::List => {
                // Export names are secret capabilities: the list is always empty.
                proto::put_option_reply(out, code, rep::ACK, b"");
                Next::Continue
            }
            ClientOption::StartTls => self.start_tls(out),
            ClientOption::Info(req) => self.info_or_go(code, req, catalog, out),
            ClientOption::Go(req) => self.info_or_go(code, req, catalog, out),
            ClientOption::StructuredReply => {
                self.structured = true;
                proto::put_option_reply(out, code, rep::ACK, b"");
                Next::Continue
            }
            ClientOption::ListMetaContext(req) => self.meta_context(code, req, false, out),
            ClientOption::SetMetaContext(req) => self.meta_context(code, req, true, out),
            ClientOption::Unsupported(_) => {
                tracing::debug!(option = code, "unsupported option");
                proto::put_option_reply(out, code, rep::ERR_UNSUP, b"unsupported option");
                Next::Continue
            }
        }
    }

    fn invalid(&mut self, code: u32, err: &OptionError, out: &mut Vec<u8>) -> Next {
        tracing::debug!(option = code, error = %err, "invalid option data");
        if code == opt::EXPORT_NAME {
            return Next::Close;
        }
        if code == opt::SET_META_CONTEXT {
            // A failed SET_META_CONTEXT still replaces the selection.
            self.meta_export = None;
        }
        proto::put_option_reply(out, code, rep::ERR_INVALID, err.to_string().as_bytes());
        Next::Continue
    }

    fn start_tls(&mut self, out: &mut Vec<u8>) -> Next {
        match (self.policy, self.tls_active) {
            (TlsPolicy::Plain, _) => {
                proto::put_option_reply(out, opt::STARTTLS, rep::ERR_POLICY, b"TLS is not offered");
                Next::Continue
            }
            (TlsPolicy::Required, true) => {
                proto::put_option_reply(
                    out,
                    opt::STARTTLS,
                    rep::ERR_INVALID,
                    b"TLS is already active",
                );
                Next::Continue
            }
            (TlsPolicy::Required, false) => {
                proto::put_option_reply(out, opt::STARTTLS, rep::ACK, b"");
                Next::StartTls
            }
        }
    }

    /// The export, if it exists and has not been revoked.
    fn open(catalog: &dyn ExportCatalog, name: &str) -> Option<Export> {
        catalog.open(name).filter(|e| !e.revoked.is_cancelled())
    }

    fn negotiated(&self, name: &str, export: Export) -> Negotiated {
        let size = export.device.size();
        let mut flags = transmission_flags::HAS_FLAGS
            | transmission_flags::SEND_FLUSH
            | transmission_flags::SEND_FUA;
        if export.read_only {
            flags |= transmission_flags::READ_ONLY;
        } else {
            flags |= transmission_flags::SEND_TRIM | transmission_flags::SEND_WRITE_ZEROES;
        }
        if self.structured {
            flags |= transmission_flags::SEND_DF;
        }
        if export.device.can_multi_conn() {
            flags |= transmission_flags::CAN_MULTI_CONN;
        }
        let base_allocation = (self.structured && self.meta_export.as_deref() == Some(name))
            .then_some(BASE_ALLOCATION_ID);
        Negotiated {
            params: TransmissionParams {
                size,
                read_only: export.read_only,
                structured: self.structured,
                base_allocation,
            },
            export,
            name: name.to_owned(),
            flags,
        }
    }

    fn export_name(&mut self, name: &str, catalog: &dyn ExportCatalog, out: &mut Vec<u8>) -> Next {
        let Some(export) = Self::open(catalog, name) else {
            tracing::debug!("NBD_OPT_EXPORT_NAME for an unknown export; closing");
            return Next::Close;
        };
        let negotiated = self.negotiated(name, export);
        proto::put_export_name_reply(
            out,
            negotiated.params.size,
            negotiated.flags,
            self.no_zeroes,
        );
        Next::Transmit(Box::new(negotiated))
    }

    fn info_or_go(
        &mut self,
        code: u32,
        req: InfoRequest<'_>,
        catalog: &dyn ExportCatalog,
        out: &mut Vec<u8>,
    ) -> Next {
        let Some(export) = Self::open(catalog, req.name) else {
            tracing::debug!(option = code, "unknown export");
            proto::put_option_reply(out, code, rep::ERR_UNKNOWN, b"unknown export");
            return Next::Continue;
        };
        let negotiated = self.negotiated(req.name, export);
        proto::put_info_export(out, code, negotiated.params.size, negotiated.flags);
        // Always sent: clients that honour it keep to 512-byte alignment and 32 MiB requests.
        proto::put_info_block_size(
            out,
            code,
            MIN_BLOCK_SIZE,
            PREFERRED_BLOCK_SIZE,
            MAX_BLOCK_SIZE,
        );
        if req.wants(info::NAME) {
            proto::put_info_string(out, code, info::NAME, req.name);
        }
        proto::put_option_reply(out, code, rep::ACK, b"");
        if code == opt::GO {
            Next::Transmit(Box::new(negotiated))
        } else {
            Next::Continue
        }
    }

    fn meta_context(
        &mut self,
        code: u32,
        req: MetaContextRequest<'_>,
        set: bool,
        out: &mut Vec<u8>,
    ) -> Next {
        if set {
            self.meta_export = None;
        }
        if !self.structured {
            proto::put_option_reply(
                out,
                code,
                rep::ERR_INVALID,
                b"structured replies must be negotiated first",
            );
            return Next::Continue;
        }
        // `base:allocation` is selected by its full name; when listing, `base:` is a wildcard
        // and no query at all lists everything. Unknown namespaces and leaves are ignored.
        let selected = if req.query_count() == 0 {
            !set
        } else {
            req.queries()
                .any(|q| q == BASE_ALLOCATION || (!set && q == "base:"))
        };
        if selected {
            proto::put_meta_context(out, code, BASE_ALLOCATION_ID, BASE_ALLOCATION);
            if set {
                self.meta_export = Some(req.export.to_owned());
            }
        }
        proto::put_option_reply(out, code, rep::ACK, b"");
        Next::Continue
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{BlockDevice, Extent};

    struct Null(u64);

    impl BlockDevice for Null {
        fn size(&self) -> u64 {
            self.0
        }
        fn read(&self, _: u64, buf: &mut [u8]) -> std::io::Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn write(&self, _: u64, _: &mut [u8], _: bool) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn trim(&self, _: u64, _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn write_zeroes(&self, _: u64, _: u64, _: bool, _: bool) -> std::io::Result<()> {
            Ok(())
        }
        fn block_status(&self, _: u64, len: u64) -> std::io::Result<Vec<Extent>> {
            Ok(vec![Extent {
                len,
                hole: false,
                zero: false,
            }])
        }
        fn can_multi_conn(&self) -> bool {
            true
        }
    }

    struct Catalog(HashMap<String, Export>);

    impl ExportCatalog for Catalog {
        fn open(&self, name: &str) -> Option<Export> {
            self.0.get(name).cloned()
        }
    }

    fn catalog() -> (Catalog, CancellationToken) {
        let revoked = CancellationToken::new();
        let mut m = HashMap::new();
        m.insert(
            "disk".to_owned(),
            Export {
                device: Arc::new(Null(1 << 20)),
                read_only: false,
                revoked: CancellationToken::new(),
            },
        );
        m.insert(
            "ro".to_owned(),
            Export {
                device: Arc::new(Null(4096)),
                read_only: true,
                revoked: CancellationToken::new(),
            },
        );
        m.insert(
            "gone".to_owned(),
            Export {
                device: Arc::new(Null(4096)),
                read_only: false,
                revoked: revoked.clone(),
            },
        );
        revoked.cancel();
        (Catalog(m), revoked)
    }

    fn info_data(name: &str, requests: &[u16]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&(name.len() as u32).to_be_bytes());
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(requests.len() as u16).to_be_bytes());
        for r in requests {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    fn meta_data(export: &str, queries: &[&str]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&(export.len() as u32).to_be_bytes());
        d.extend_from_slice(export.as_bytes());
        d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            d.extend_from_slice(&(q.len() as u32).to_be_bytes());
            d.extend_from_slice(q.as_bytes());
        }
        d
    }

    /// Splits option replies into (option, type, data).
    fn replies(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        while !b.is_empty() {
            assert_eq!(&b[0..8], &proto::OPTION_REPLY_MAGIC.to_be_bytes());
            let o = u32::from_be_bytes(b[8..12].try_into().unwrap());
            let t = u32::from_be_bytes(b[12..16].try_into().unwrap());
            let l = u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize;
            v.push((o, t, b[20..20 + l].to_vec()));
            b = &b[20 + l..];
        }
        v
    }

    fn types(b: &[u8]) -> Vec<u32> {
        replies(b).into_iter().map(|r| r.1).collect()
    }

    fn plain() -> Negotiation {
        Negotiation::new(TlsPolicy::Plain, proto::ClientFlags { no_zeroes: true })
    }

    fn run(n: &mut Negotiation, cat: &Catalog, code: u32, data: &[u8]) -> (Next, Vec<u8>) {
        let mut out = Vec::new();
        let next = n.option(code, data, cat, &mut out);
        (next, out)
    }

    #[test]
    fn go_answers_export_info_block_size_and_enters_transmission() {
        let (cat, _) = catalog();
        let mut n = plain();
        let (next, out) = run(&mut n, &cat, opt::GO, &info_data("disk", &[]));
        let r = replies(&out);
        assert_eq!(
            r.iter().map(|x| x.1).collect::<Vec<_>>(),
            [rep::INFO, rep::INFO, rep::ACK]
        );
        assert_eq!(&r[0].2[0..2], &info::EXPORT.to_be_bytes());
        assert_eq!(&r[0].2[2..10], &(1u64 << 20).to_be_bytes());
        let flags = u16::from_be_bytes([r[0].2[10], r[0].2[11]]);
        assert_ne!(flags & transmission_flags::HAS_FLAGS, 0);
        assert_ne!(flags & transmission_flags::CAN_MULTI_CONN, 0);
        assert_eq!(flags & transmission_flags::READ_ONLY, 0);
        assert_eq!(flags & transmission_flags::SEND_DF, 0);
        assert_eq!(
            r[1].2,
            [
                &info::BLOCK_SIZE.to_be_bytes()[..],
                &512u32.to_be_bytes(),
                &4096u32.to_be_bytes(),
                &(32u32 << 20).to_be_bytes()
            ]
            .concat()
        );
        let Next::Transmit(t) = next else {
            panic!("no transmission")
        };
        assert_eq!(t.params.size, 1 << 20);
        assert!(!t.params.structured);
        assert_eq!(t.params.base_allocation, None);
    }

    #[test]
    fn info_does_not_enter_transmission_and_name_is_sent_on_request() {
        let (cat, _) = catalog();
        let mut n = plain();
        let (next, out) = run(&mut n, &cat, opt::INFO, &info_data("ro", &[info::NAME]));
        assert!(matches!(next, Next::Continue));
        let r = replies(&out);
        assert_eq!(r.len(), 4);
        assert_eq!(r[2].2, [&info::NAME.to_be_bytes()[..], b"ro"].concat());
        let flags = u16::from_be_bytes([r[0].2[10], r[0].2[11]]);
        assert_ne!(flags & transmission_flags::READ_ONLY, 0);
        assert_eq!(flags & transmission_flags::SEND_TRIM, 0);
    }

    #[test]
    fn unknown_and_revoked_exports_are_err_unknown() {
        let (cat, _) = catalog();
        let mut n = plain();
        for name in ["nope", "gone", ""] {
            for code in [opt::GO, opt::INFO] {
                let (next, out) = run(&mut n, &cat, code, &info_data(name, &[]));
                assert!(matches!(next, Next::Continue));
                assert_eq!(types(&out), [rep::ERR_UNKNOWN]);
            }
            let (next, out) = run(&mut n, &cat, opt::EXPORT_NAME, name.as_bytes());
            assert!(matches!(next, Next::Close));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn export_name_sends_size_and_flags_without_zeroes_when_negotiated() {
        let (cat, _) = catalog();
        let mut n = plain();
        let (next, out) = run(&mut n, &cat, opt::EXPORT_NAME, b"disk");
        assert!(matches!(next, Next::Transmit(_)));
        assert_eq!(out.len(), 10);
        let mut z = Negotiation::new(TlsPolicy::Plain, proto::ClientFlags { no_zeroes: false });
        let (_, out) = run(&mut z, &cat, opt::EXPORT_NAME, b"disk");
        assert_eq!(out.len(), 134);
    }

    #[test]
    fn list_is_always_empty_and_unknown_options_unsupported() {
        let (cat, _) = catalog();
        let mut n = plain();
        assert_eq!(types(&run(&mut n, &cat, opt::LIST, b"").1), [rep::ACK]);
        assert_eq!(
            types(&run(&mut n, &cat, opt::LIST, b"x").1),
            [rep::ERR_INVALID]
        );
        assert_eq!(types(&run(&mut n, &cat, 11, b"").1), [rep::ERR_UNSUP]);
        assert_eq!(types(&run(&mut n, &cat, 0, b"abc").1), [rep::ERR_UNSUP]);
        let (next, out) = run(&mut n, &cat, opt::ABORT, b"");
        assert!(matches!(next, Next::Close));
        assert_eq!(types(&out), [rep::ACK]);
    }

    #[test]
    fn forced_tls_refuses_everything_but_starttls_and_abort() {
        let (cat, _) = catalog();
        let mut n = Negotiation::new(TlsPolicy::Required, proto::ClientFlags { no_zeroes: true });
        for code in [opt::GO, opt::INFO, opt::LIST, opt::STRUCTURED_REPLY, 99] {
            let (next, out) = run(&mut n, &cat, code, &info_data("disk", &[]));
            assert!(matches!(next, Next::Continue));
            assert_eq!(types(&out), [rep::ERR_TLS_REQD]);
        }
        let (next, out) = run(&mut n, &cat, opt::EXPORT_NAME, b"disk");
        assert!(matches!(next, Next::Close));
        assert!(out.is_empty());
        let (next, out) = run(&mut n, &cat, opt::STARTTLS, b"");
        assert!(matches!(next, Next::StartTls));
        assert_eq!(types(&out), [rep::ACK]);
        n.tls_started();
        let (next, out) = run(&mut n, &cat, opt::STARTTLS, b"");
        assert!(matches!(next, Next::Continue));
        assert_eq!(types(&out), [rep::ERR_INVALID]);
        let (next, _) = run(&mut n, &cat, opt::GO, &info_data("disk", &[]));
        assert!(matches!(next, Next::Transmit(_)));
    }

    #[test]
    fn plain_mode_refuses_starttls_by_policy() {
        let (cat, _) = catalog();
        let mut n = plain();
        assert_eq!(
            types(&run(&mut n, &cat, opt::STARTTLS, b"").1),
            [rep::ERR_POLICY]
        );
    }

    #[test]
    fn starttls_forgets_earlier_negotiation() {
        let (cat, _) = catalog();
        let mut n = Negotiation::new(TlsPolicy::Required, proto::ClientFlags { no_zeroes: true });
        run(&mut n, &cat, opt::STARTTLS, b"");
        n.tls_started();
        run(&mut n, &cat, opt::STRUCTURED_REPLY, b"");
        run(
            &mut n,
            &cat,
            opt::SET_META_CONTEXT,
            &meta_data("disk", &["base:allocation"]),
        );
        n.tls_started();
        let (next, _) = run(&mut n, &cat, opt::GO, &info_data("disk", &[]));
        let Next::Transmit(t) = next else { panic!() };
        assert!(!t.params.structured);
        assert_eq!(t.params.base_allocation, None);
    }

    #[test]
    fn meta_contexts_need_structured_replies_and_the_same_export() {
        let (cat, _) = catalog();
        let mut n = plain();
        let set = meta_data("disk", &["base:allocation"]);
        assert_eq!(
            types(&run(&mut n, &cat, opt::SET_META_CONTEXT, &set).1),
            [rep::ERR_INVALID]
        );
        assert_eq!(
            types(&run(&mut n, &cat, opt::STRUCTURED_REPLY, b"").1),
            [rep::ACK]
        );
        let out = run(&mut n, &cat, opt::SET_META_CONTEXT, &set).1;
        let r = replies(&out);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1, rep::META_CONTEXT);
        assert_eq!(
            r[0].2,
            [&BASE_ALLOCATION_ID.to_be_bytes()[..], b"base:allocation"].concat()
        );
        let (next, out) = run(&mut n, &cat, opt::GO, &info_data("disk", &[]));
        let flags = u16::from_be_bytes([replies(&out)[0].2[10], replies(&out)[0].2[11]]);
        assert_ne!(flags & transmission_flags::SEND_DF, 0);
        let Next::Transmit(t) = next else { panic!() };
        assert!(t.params.structured);
        assert_eq!(t.params.base_allocation, Some(BASE_ALLOCATION_ID));

        // Selected for another export name: not active.
        let mut n = plain();
        run(&mut n, &cat, opt::STRUCTURED_REPLY, b"");
        run(
            &mut n,
            &cat,
            opt::SET_META_CONTEXT,
            &meta_data("ro", &["base:allocation"]),
        );
        let (next, _) = run(&mut n, &cat, opt::GO, &info_data("disk", &[]));
        let Next::Transmit(t) = next else { panic!() };
        assert_eq!(t.params.base_allocation, None);
    }

    #[test]
    fn meta_context_queries() {
        let (cat, _) = catalog();
        let mut n = plain();
        run(&mut n, &cat, opt::STRUCTURED_REPLY, b"");
        let count = |n: &mut Negotiation, code, q: &[&str]| {
            types(&run(n, &cat, code, &meta_data("disk", q)).1)
                .iter()
                .filter(|t| **t == rep::META_CONTEXT)
                .count()
        };
        assert_eq!(count(&mut n, opt::LIST_META_CONTEXT, &[]), 1);
        assert_eq!(count(&mut n, opt::LIST_META_CONTEXT, &["base:"]), 1);
        assert_eq!(count(&mut n, opt::LIST_META_CONTEXT, &["qemu:dirty"]), 0);
        assert_eq!(count(&mut n, opt::SET_META_CONTEXT, &[]), 0);
        assert_eq!(count(&mut n, opt::SET_META_CONTEXT, &["base:"]), 0);
        assert_eq!(
            count(&mut n, opt::SET_META_CONTEXT, &["x-a:b", "base:allocation"]),
            1
        );
        // A malformed SET clears the selection.
        let mut bad = meta_data("disk", &["base:allocation"]);
        bad.truncate(bad.len() - 1);
        assert_eq!(
            types(&run(&mut n, &cat, opt::SET_META_CONTEXT, &bad).1),
            [rep::ERR_INVALID]
        );
        let (next, _) = run(&mut n, &cat, opt::GO, &info_data("disk", &[]));
        let Next::Transmit(t) = next else { panic!() };
        assert_eq!(t.params.base_allocation, None);
    }

    #[test]
    fn malformed_go_is_invalid_and_malformed_export_name_closes() {
        let (cat, _) = catalog();
        let mut n = plain();
        assert_eq!(
            types(&run(&mut n, &cat, opt::GO, b"\0\0").1),
            [rep::ERR_INVALID]
        );
        let (next, _) = run(&mut n, &cat, opt::EXPORT_NAME, &[0xff]);
        assert!(matches!(next, Next::Close));
    }
}
