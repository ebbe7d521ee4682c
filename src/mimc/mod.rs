//! MIMC wire compatibility (issue 13; `../shared/mimc-wire.md` beside DESIGN.md): the
//! unmodified MIMC web SDK speaking to Courier. So far the sans-IO pieces: the web
//! frame layout with its Adler-32 trailer (`frame`), and RC4 and the BIND signature
//! (`crypto`). The codec on the shared session core, the endpoint and the message
//! mapping come next (docs/mimc-compat.md will describe them).

pub mod crypto;
pub mod frame;
