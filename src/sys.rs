//! The crate's only `unsafe`: the Linux calls that std, tokio and socket2 do not wrap
//! (`pipe2`, `fcntl(F_SETPIPE_SZ)`, `splice`, `setsockopt(TCP_DEFER_ACCEPT)`), tokio's
//! registration of a raw listening socket, and taking the listening sockets a service manager
//! passed, each behind a safe wrapper over owned or borrowed file descriptors; glibc's
//! `mallopt` and `malloc_trim`, so that a dropped rule snapshot and the flows of a flood go
//! back to the system; `getifaddrs`, for the destination guard's list of this machine's
//! addresses; and counters in zeroed memory that costs nothing until counted on.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// `n` atomic counters at zero, in zeroed memory straight from the allocator (`calloc`, which
/// for a large array maps fresh zero pages): a page no counter on it is ever added to is never
/// touched, and costs no resident memory. A million rules' counters cost only the pages of the
/// rules that decide something.
pub fn zeroed_counters<T: Counter>(n: usize) -> Box<[T]> {
    // SAFETY: `T: Counter` is only implemented for the atomic integers below, for which all-zero
    // bytes are a valid value (zero), as for the integers they wrap.
    unsafe { Box::<[T]>::new_zeroed_slice(n).assume_init() }
}

/// An atomic integer, valid as all-zero bytes: what [`zeroed_counters`] makes.
pub trait Counter: private::Sealed {}
impl Counter for std::sync::atomic::AtomicU64 {}
impl Counter for std::sync::atomic::AtomicU32 {}
mod private {
    pub trait Sealed {}
    impl Sealed for std::sync::atomic::AtomicU64 {}
    impl Sealed for std::sync::atomic::AtomicU32 {}
}

/// A non-blocking, close-on-exec pipe; both ends close on drop.
#[derive(Debug)]
pub struct Pipe {
    /// The end `splice` drains into a socket.
    read: OwnedFd,
    /// The end `splice` fills from a socket.
    write: OwnedFd,
    /// What the pipe can hold: how much one `splice` into it asks for. An upper bound only (a
    /// user over `fs.pipe-user-pages-soft` gets smaller pipes); `splice` moves what fits.
    capacity: usize,
}

impl Pipe {
    /// Creates a pipe (`pipe2(O_NONBLOCK | O_CLOEXEC)`). With `size`, asks for that capacity
    /// (`F_SETPIPE_SZ`, rounded up by the kernel to a power-of-two number of pages) and keeps the
    /// default when the kernel refuses (above `fs.pipe-max-size`, or over the user's pipe quota).
    pub fn new(size: Option<usize>) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut capacity = DEFAULT_PIPE_SIZE;
        if let Some(size) = size.and_then(|s| libc::c_int::try_from(s).ok()) {
            // SAFETY: F_SETPIPE_SZ on a descriptor this function owns; no pointers involved.
            let set = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
            if set > 0 {
                capacity = set as usize;
            }
        }
        Ok(Pipe { read, write, capacity })
    }

    /// The end to splice out of.
    pub fn reader(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.read.as_fd()
    }

    /// The end to splice into.
    pub fn writer(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.write.as_fd()
    }

    /// Bytes the pipe holds at most (see the field).
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A pipe's capacity unless resized: 16 pages (`pipe(7)`).
const DEFAULT_PIPE_SIZE: usize = 16 * 4096;

/// Moves up to `len` bytes from `from` to `to` inside the kernel; one of them must be a pipe.
/// Non-blocking on the pipe (`SPLICE_F_NONBLOCK`); a socket end follows its own `O_NONBLOCK`,
/// which tokio sets. `Ok(0)` reading from a socket is its EOF. A call that would block returns
/// `ErrorKind::WouldBlock`. Splicing into a socket whose peer is gone fails with EPIPE and
/// raises SIGPIPE, which Rust programs ignore from startup, as they do for `write`.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, hence open for the call; null offsets mean "the
    // current file position", which is what pipes and sockets require.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Sets TCP_DEFER_ACCEPT on a listening socket: the kernel completes `accept` only once the
/// client has sent data (or after about `seconds`, for a silent client), so that the first
/// read of an accepted connection finds its first bytes.
pub fn set_defer_accept(listener: BorrowedFd<'_>, seconds: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is borrowed, hence open; the option value points to a c_int that
    // lives through the call, and its size is passed with it.
    let set = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Allocations of this size and up get their own mapping, given back when freed.
pub const OWN_MAPPING: usize = 128 << 10;

/// Makes every allocation of [`OWN_MAPPING`] bytes or more a mapping of its own for the life of
/// the process. glibc otherwise raises that threshold each time it frees such a mapping, up to
/// 32 MiB, and serves later large allocations from its heap, which keeps what they free: a
/// reload would then leave the old snapshot's size resident. musl always maps large
/// allocations, so there this does nothing.
pub fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two ints and changes only the allocator's tuning; no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_MAPPING as libc::c_int);
    }
}

/// Gives the free memory at the top of glibc's heaps, and free whole pages within them, back to
/// the system (`malloc_trim(0)`, every arena). Many small blocks freed at once (the flows of a
/// flood) otherwise stay resident in the arenas that served them. Costs a walk of the free
/// lists: call it after large frees, not per free. musl returns memory on its own; there this
/// does nothing.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes a size and only releases memory the allocator holds free; no
    // pointers, and it locks each arena itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Asks the kernel to back `data` with huge pages (2 MiB), now: for a large table read at
/// random, one TLB entry then covers 512 times as much of it. Only the 2 MiB-aligned part of
/// `data` can be; where transparent huge pages are off, or the kernel predates
/// `MADV_COLLAPSE` (6.1), this does nothing, or only marks the range for `khugepaged`.
pub fn huge_pages<T>(data: &[T]) {
    const HUGE: usize = 2 << 20;
    /// `MADV_COLLAPSE` (Linux 6.1): collapse the range into huge pages synchronously.
    const MADV_COLLAPSE: libc::c_int = 25;
    let start = data.as_ptr() as usize;
    let end = start + std::mem::size_of_val(data);
    let (first, last) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if first >= last {
        return;
    }
    for advice in [libc::MADV_HUGEPAGE, MADV_COLLAPSE] {
        // SAFETY: the range lies inside `data`, a live allocation this process owns; the
        // advice changes how it is backed, never its contents.
        unsafe { libc::madvise(first as *mut libc::c_void, last - first, advice) };
    }
}

/// Every address of this machine's interfaces, IPv4 and IPv6, up or down (`getifaddrs(3)`),
/// in the kernel's order, repeats included.
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid place for getifaddrs to write the list's head; on success the
    // list is this function's to read and to free.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut node = head;
    while !node.is_null() {
        // SAFETY: `node` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*node };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null `ifa_addr` points to a socket address whose family field says
            // which type it is, and it is at least as large as that type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a `sockaddr_in` (see above).
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                found.push(IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a `sockaddr_in6` (see above).
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                found.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        node = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs, is freed once, and no node is used after this.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: libc::c_int = 3;

/// The listening sockets a service manager passed to this process (systemd's socket
/// activation, `sd_listen_fds(3)`: descriptors 3 and up, `LISTEN_FDS` of them, named by
/// `LISTEN_FDNAMES`), each with its name. Only when `LISTEN_PID` is this process, or with
/// `inherited` its parent (a master's worker: the master, which systemd passed them to, leaves
/// them open for its first worker); only once
/// per process (a second call returns none), so that no descriptor is owned twice. Each is
/// made close-on-exec.
pub fn listen_fds(inherited: bool) -> Vec<(String, socket2::Socket)> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let var = |name: &str| std::env::var(name).ok();
    let pid = var("LISTEN_PID").and_then(|p| p.parse::<u32>().ok());
    let ours = pid == Some(std::process::id()) || (inherited && pid == Some(std::os::unix::process::parent_id()));
    let count = var("LISTEN_FDS").and_then(|n| n.parse::<libc::c_int>().ok()).unwrap_or(0);
    if !ours || count <= 0 || TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Vec::new();
    }
    let names: Vec<String> =
        var("LISTEN_FDNAMES").map(|n| n.split(':').map(str::to_string).collect()).unwrap_or_default();
    (0..count)
        .filter_map(|i| {
            let fd = LISTEN_FDS_START + i;
            // SAFETY: the service manager opened descriptors 3..3+LISTEN_FDS for this process
            // (LISTEN_PID), and TAKEN makes this the only place that takes ownership of them.
            let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
            socket.set_cloexec(true).ok()?;
            let name = names.get(i as usize).cloned().unwrap_or_else(|| "unknown".into());
            Some((name, socket))
        })
        .collect()
}

/// Most descriptors one handover message carries.
pub const MAX_PASSED_FDS: usize = 64;

/// Sends `payload` over a Unix stream socket with `fds` attached (SCM_RIGHTS): the receiver
/// gets its own descriptors for the same open sockets.
pub fn send_fds(socket: BorrowedFd<'_>, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_PASSED_FDS || payload.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "1..=64 descriptors and a payload"));
    }
    let raw: Vec<libc::c_int> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let data_len = std::mem::size_of_val(raw.as_slice()) as libc::c_uint;
    // SAFETY: CMSG_SPACE only computes a size from its argument.
    let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() };
    // SAFETY: an all-zero msghdr is valid; the fields set below point to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `space` bytes, enough for one header and `raw` (CMSG_SPACE),
    // so CMSG_FIRSTHDR is non-null and CMSG_DATA has room for `data_len` bytes; sendmsg reads
    // the iovec (payload, borrowed for the call) and the control buffer, both alive.
    let sent = unsafe {
        let header = libc::CMSG_FIRSTHDR(&raw const msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(data_len) as _;
        std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), libc::CMSG_DATA(header), data_len as usize);
        libc::sendmsg(socket.as_raw_fd(), &raw const msg, libc::MSG_NOSIGNAL)
    };
    match sent {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if (n as usize) < payload.len() => {
            Err(io::Error::new(io::ErrorKind::WriteZero, "handover message cut short"))
        }
        _ => Ok(()),
    }
}

/// Receives one message sent by [`send_fds`] into `payload`: the bytes read and the
/// descriptors that came with them, owned (close-on-exec).
pub fn recv_fds(socket: BorrowedFd<'_>, payload: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let data_len = (MAX_PASSED_FDS * std::mem::size_of::<libc::c_int>()) as libc::c_uint;
    // SAFETY: CMSG_SPACE only computes a size from its argument.
    let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
    // SAFETY: an all-zero msghdr is valid; the fields set below point to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: recvmsg writes at most iov_len bytes into `payload` and msg_controllen bytes into
    // `control`, both alive and writable for the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with well-formed headers up to msg_controllen;
    // CMSG_FIRSTHDR/CMSG_NXTHDR walk them and return null at the end. An SCM_RIGHTS header's
    // data holds (cmsg_len - CMSG_LEN(0)) / sizeof(int) descriptors, each newly opened for this
    // process and owned by nobody else, so wrapping each in an OwnedFd is sound.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&raw const msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(header).cast::<libc::c_int>();
                for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&raw const msg, header);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "more descriptors than a handover carries"));
    }
    Ok((n as usize, fds))
}

/// The user id of the process at the other end of a connected Unix socket (SO_PEERCRED), as
/// it was when it connected.
pub fn peer_uid(socket: BorrowedFd<'_>) -> io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the descriptor is borrowed, hence open; getsockopt writes at most `len` bytes
    // into `cred`, a live local of that size.
    let rc = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &raw mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// CLOCK_MONOTONIC in microseconds: what a service manager compares reload times with.
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes two integers; no memory is involved.
    match unsafe { libc::kill(pid, signal) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Reaps one child that has ended, if any has, without waiting: its pid and exit code (128 +
/// the signal for a child killed by one). A process that reaps with this must reap every child
/// so (as PID 1 it also reaps the orphans handed to it).
pub fn reap_any() -> Option<(u32, i32)> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes the status into a live local.
    let pid = unsafe { libc::waitpid(-1, &raw mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let code = match (libc::WIFEXITED(status), libc::WIFSIGNALED(status)) {
        (true, _) => libc::WEXITSTATUS(status),
        (_, true) => 128 + libc::WTERMSIG(status),
        _ => return Some((pid as u32, -1)),
    };
    Some((pid as u32, code))
}

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
pub fn raise_open_files() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one rlimit from a live local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(limit.rlim_cur)
}

/// Takes an exclusive lock on `file` (`flock`) if nobody holds one: `Ok(false)` when another
/// open file holds it. The lock lasts while any descriptor of this open file does.
pub fn try_lock(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: the descriptor is borrowed from a live File; flock takes no pointers.
    match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
        0 => Ok(true),
        _ => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            e => Err(e),
        },
    }
}

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() }
}

/// Asks the kernel to report each datagram's original destination (IP_RECVORIGDSTADDR,
/// IPV6_RECVORIGDSTADDR): with TPROXY, the address the client sent to.
pub fn set_recv_original_dst(socket: BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    let one: libc::c_int = 1;
    let (level, name) =
        if ipv6 { (libc::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR) } else { (libc::SOL_IP, libc::IP_RECVORIGDSTADDR) };
    // SAFETY: setsockopt reads an int from a live local for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Receives one datagram into `buf`: its length, its source, and its original destination
/// when the socket reports it (see [`set_recv_original_dst`]).
pub fn recv_from_to(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<SocketAddr>)> {
    // Room for one sockaddr_in6 header, the larger of the two.
    let mut control = [0u64; 16];
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is valid; the fields set below point to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg writes at most iov_len bytes into `buf`, msg_namelen into `from` and
    // msg_controllen into `control`, all alive and writable for the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote a sockaddr of msg_namelen bytes into `from`, whose family says
    // which: sockaddr_storage is large and aligned enough for either.
    let source = unsafe { from_sockaddr((&raw const from).cast()) }
        .ok_or_else(|| io::Error::other("a datagram from a non-IP address"))?;
    let mut original = None;
    // SAFETY: the kernel filled msg_control with well-formed headers up to msg_controllen;
    // CMSG_FIRSTHDR/CMSG_NXTHDR walk them and return null at the end. IP_ORIGDSTADDR carries a
    // sockaddr_in and IPV6_ORIGDSTADDR a sockaddr_in6; each is read (unaligned) only when its
    // header's length covers it.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&raw const msg);
        while !header.is_null() {
            let (level, kind) = ((*header).cmsg_level, (*header).cmsg_type);
            let data = libc::CMSG_DATA(header);
            let fits = |size: usize| (*header).cmsg_len as usize >= libc::CMSG_LEN(size as libc::c_uint) as usize;
            if (level, kind) == (libc::SOL_IP, libc::IP_ORIGDSTADDR) && fits(std::mem::size_of::<libc::sockaddr_in>()) {
                original = Some(v4(data.cast::<libc::sockaddr_in>().read_unaligned()));
            } else if (level, kind) == (libc::SOL_IPV6, libc::IPV6_ORIGDSTADDR)
                && fits(std::mem::size_of::<libc::sockaddr_in6>())
            {
                original = Some(v6(data.cast::<libc::sockaddr_in6>().read_unaligned()));
            }
            header = libc::CMSG_NXTHDR(&raw const msg, header);
        }
    }
    Ok((n as usize, source, original))
}

fn v4(a: libc::sockaddr_in) -> SocketAddr {
    SocketAddr::from((std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port)))
}

fn v6(a: libc::sockaddr_in6) -> SocketAddr {
    let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
    std::net::SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id).into()
}

/// The IP socket address at `addr`, by its family.
///
/// # Safety
/// `addr` points to a sockaddr of its family's size, aligned for a sockaddr_in6.
unsafe fn from_sockaddr(addr: *const libc::sockaddr) -> Option<SocketAddr> {
    // SAFETY: the caller vouches for the pointer, and the family says which struct is there.
    unsafe {
        match i32::from((*addr).sa_family) {
            libc::AF_INET => Some(v4(addr.cast::<libc::sockaddr_in>().read())),
            libc::AF_INET6 => Some(v6(addr.cast::<libc::sockaddr_in6>().read())),
            _ => None,
        }
    }
}

/// Registers a listening socket with the runtime's reactor, for readability (incoming
/// connections). Must be called within the runtime.
pub fn register_listener(socket: socket2::Socket) -> io::Result<AsyncFd<socket2::Socket>> {
    // SAFETY: the AsyncFd takes ownership of the socket, which owns its descriptor and closes it
    // only when dropped, so the descriptor stays open and refers to the same socket for the
    // AsyncFd's whole life, and `as_raw_fd` always returns it.
    Ok(unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?)
}

/// A failed bind of `addr` by `what` (a listener, the metrics endpoint), said with its fix: the
/// OS error kind is kept, for the exit code.
pub fn bind_error(what: &str, addr: SocketAddr, e: io::Error) -> io::Error {
    let why = match e.kind() {
        io::ErrorKind::AddrInUse => {
            format!("another process listens on {addr}: stop it, or choose another address")
        }
        io::ErrorKind::PermissionDenied if addr.port() != 0 && addr.port() < 1024 => format!(
            "binding {addr} needs CAP_NET_BIND_SERVICE (or run as root): `setcap cap_net_bind_service=+ep` on the binary, or a port of 1024 or above"
        ),
        io::ErrorKind::AddrNotAvailable => format!("{addr} is not an address of this machine: {e}"),
        _ => format!("bind {addr}: {e}"),
    };
    io::Error::new(e.kind(), format!("{what}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn interface_addresses_include_loopback() {
        let found = interface_addresses().unwrap();
        assert!(found.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{found:?}");
    }

    #[test]
    fn bytes_cross_a_pipe_between_sockets() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (c, mut d) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let pipe = Pipe::new(None).unwrap();
        assert_eq!(pipe.capacity(), DEFAULT_PIPE_SIZE);
        assert_eq!(splice(b.as_fd(), pipe.writer(), pipe.capacity()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        a.write_all(b"hello").unwrap();
        assert_eq!(splice(b.as_fd(), pipe.writer(), pipe.capacity()).unwrap(), 5);
        assert_eq!(splice(pipe.reader(), c.as_fd(), 5).unwrap(), 5);
        let mut got = [0; 5];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        drop(a);
        assert_eq!(splice(b.as_fd(), pipe.writer(), pipe.capacity()).unwrap(), 0, "EOF");
    }

    #[test]
    fn a_deferred_listener_accepts_once_data_arrives() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_defer_accept(listener.as_fd(), 1).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(listener.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock, "handshake alone");
        client.write_all(b"hello").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let (mut accepted, _) = loop {
            match listener.accept() {
                Ok(a) => break a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        };
        let mut got = [0; 5];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
    }

    #[test]
    fn a_resized_pipe_reports_its_capacity() {
        let pipe = Pipe::new(Some(256 * 1024)).unwrap();
        assert_eq!(pipe.capacity(), 256 * 1024);
    }

    #[test]
    fn descriptors_cross_a_unix_socket() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        send_fds(a.as_fd(), b"one", &[listener.as_fd()]).unwrap();
        let mut payload = [0u8; 16];
        let (n, fds) = recv_fds(b.as_fd(), &mut payload).unwrap();
        assert_eq!(&payload[..n], b"one");
        assert_eq!(fds.len(), 1);
        let received = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(received.local_addr().unwrap(), addr, "the same listening socket");
    }
}
