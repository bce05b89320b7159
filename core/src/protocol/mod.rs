//! The AMPS wire protocol as the real 5.3 clients speak it over TCP.
//!
//! ```text
//!  0       4                                   4+H                    4+N
//!  +-------+-----------------------------------+----------------------+
//!  | N (BE)| {"c":"p","t":"orders",...}  (H)   | payload (N - H bytes)|
//!  +-------+-----------------------------------+----------------------+
//! ```
//!
//! A frame is a 4-byte big-endian length followed by that many bytes: a compact JSON header and
//! the payload, with no separator. This module owns cutting frames (`frame`), the lenient header
//! parser (`header`, `keys`), command words, ack types and options (`command`), and the compact
//! header writer (`writer`). It never allocates per frame and never does I/O.

pub mod command;
pub mod frame;
pub mod header;
pub mod keys;
pub mod reply;
pub mod sow_reply;
pub mod writer;

pub use command::{AckType, AckTypes, CommandKind, Options};
pub use frame::{cut_frame, FrameError, FRAME_LENGTH_BYTES};
pub use header::{parse_header, Header, HeaderError, RawValue};
pub use writer::{FrameWriter, HeaderWriter};
