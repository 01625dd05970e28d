import NIOCore

/// The size of each read on a client connection: 512 bytes, larger only while a stream arrives (an artifact upload),
/// never because of one request.
///
/// NIO keeps each connection's read buffer for its next read (`NIOPooledRecvBufferAllocator`), at the largest capacity
/// it ever had: it never gives a buffer back while the connection is open. NIO's adaptive allocator doubles the next
/// read after any read that filled the buffer. An agent's status report is about a kilobyte with its head, so a
/// connection's kept buffer grew from 512 bytes to 1–2 KB once its agent had reported, and with 10,000 parked agents
/// the controller held about 20 MB more after a few minutes of reports than before them (docs/benchmarks.md).
///
/// Here reads stay at `initial` until `streak` reads in a row have filled the buffer — more than `streak × initial`
/// bytes waiting at once, which a request of an agent never is — and then double on every read that fills the buffer,
/// up to `maximum`, as NIO's do. Two reads in a row that use at most half of the size halve it again, not below
/// `initial`. A report larger than a read is read in pieces, which costs a system call each, not memory.
struct ConnectionReadAllocator: RecvByteBufferAllocator {
    /// Bytes of the first reads, and the least. A power of two.
    let initial: Int
    /// Largest read. A power of two, at least `initial`.
    let maximum: Int
    /// Reads in a row that filled an `initial`-sized buffer before the size grows.
    let streak: Int

    private(set) var size: Int
    private var fullReads = 0
    private var smallReads = 0

    init(initial: Int = 512, maximum: Int = 65_536, streak: Int = 8) {
        precondition(initial > 0 && initial.nonzeroBitCount == 1, "initial: \(initial)")
        precondition(maximum >= initial && maximum.nonzeroBitCount == 1, "maximum: \(maximum)")
        precondition(streak > 0, "streak: \(streak)")
        self.initial = initial
        self.maximum = maximum
        self.streak = streak
        size = initial
    }

    func buffer(allocator: ByteBufferAllocator) -> ByteBuffer {
        allocator.buffer(capacity: size)
    }

    func nextBufferSize() -> Int? {
        size
    }

    mutating func record(actualReadBytes: Int) -> Bool {
        if actualReadBytes >= size {
            smallReads = 0
            fullReads += 1
            // `size < maximum` first: `size * 2` cannot overflow once it holds (maximum is an Int power of two).
            guard size < maximum, size > initial || fullReads >= streak else { return false }
            size *= 2
            return true
        }
        fullReads = 0
        if actualReadBytes <= size / 2, size > initial {
            smallReads += 1
            if smallReads == 2 {
                size /= 2
                smallReads = 0
            }
        } else {
            smallReads = 0
        }
        return false
    }
}
