//! Blocking netlink requests on a socket of their own, for what does not go through the
//! kernel module's connection: attaching XDP, the route dump at the start, a driver's XDP
//! features.

use std::io;

use netlink_packet_core::{
    NLM_F_REQUEST, NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};

/// Room for any datagram the kernel sends: a dump's hold at most 32 KiB of messages, or one
/// larger message (a link with many VFs).
const DATAGRAM: usize = 256 << 10;

/// A blocking netlink socket of `protocol` (`NETLINK_ROUTE`, `NETLINK_GENERIC`), bound and
/// connected to the kernel.
pub fn socket(protocol: isize) -> io::Result<Socket> {
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

/// Send `message` as a request, with `flags` (`NLM_F_ACK`, `NLM_F_DUMP`) besides
/// `NLM_F_REQUEST`.
pub fn send<T: NetlinkSerializable>(
    socket: &Socket,
    mut message: NetlinkMessage<T>,
    flags: u16,
) -> io::Result<()> {
    message.header.flags = NLM_F_REQUEST | flags;
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    socket.send(&buf, 0)?;
    Ok(())
}

/// The reply to a request: its first message, whatever its payload.
pub fn reply<T: NetlinkDeserializable>(socket: &Socket) -> io::Result<NetlinkMessage<T>> {
    let mut buffer = Vec::with_capacity(DATAGRAM);
    socket.recv(&mut buffer, 0)?;
    NetlinkMessage::deserialize(&buffer).map_err(|e| decoding("reply", e))
}

/// Read the replies to a dump request until the kernel's `Done`, handing each message to
/// `each`; an error the kernel answers with is the error.
pub fn dump<T: NetlinkDeserializable>(socket: &Socket, mut each: impl FnMut(T)) -> io::Result<()> {
    let mut buffer = Vec::with_capacity(DATAGRAM);
    loop {
        buffer.clear();
        let len = socket.recv(&mut buffer, 0)?;
        let mut offset = 0;
        while offset < len.min(buffer.len()) {
            let message = NetlinkMessage::<T>::deserialize(&buffer[offset..])
                .map_err(|e| decoding("dump", e))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(inner) => each(inner),
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::from_raw_os_error(
                        e.code.map_or(libc::EIO, |c| -c.get()),
                    ));
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length.next_multiple_of(4);
        }
    }
}

fn decoding(what: &str, error: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("decoding a netlink {what}: {error}"),
    )
}
