import Shared

/// The answer the agent reads from PM2's daemon socket (Agent/ProcessManagers/PM2/PM2RPC.swift): never crash; a frame
/// is read only when every byte of it came, its parts lie inside it and encode back to the same bytes, and a frame cut
/// by one byte is incomplete, never an error or a shorter frame; a refusal is `malformed` or `tooLarge`. The answer's
/// JSON part is read whatever the input (the input taken as the answer's first part, with the call's id), and so is
/// the process table in it (`PM2ProcessTable`, as `pm2 jlist` output too), at the current time and at the edges of
/// the clock.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPM2RPC(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let limit = 1 << 16
    let id = "ferry-agent:1:1"
    do {
        if let (parts, length) = try PM2RPC.frame(in: bytes, limit: limit) {
            FuzzCheck.require(length <= bytes.count && length <= limit, "a frame of \(length) bytes from \(bytes.count)")
            FuzzCheck.require(parts.count == Int(bytes[0] & 0x0F), "\(parts.count) parts, the frame says \(bytes[0] & 0x0F)")
            FuzzCheck.require(parts.allSatisfy { $0.startIndex >= 5 && $0.endIndex <= length }, "a part outside its frame")
            FuzzCheck.require(PM2RPC.frame(parts.map(Array.init)) == Array(bytes[..<length]), "the parts do not encode back to the frame")
            let cut = try PM2RPC.frame(in: Array(bytes[..<(length - 1)]), limit: limit)
            FuzzCheck.require(cut == nil, "a frame cut by one byte was read as a frame")
            _ = try? PM2RPC.table(fromAnswer: parts, id: id)
        }
    } catch {
        switch error {
        case .malformed, .tooLarge: break
        default: FuzzCheck.require(false, "the frame reader refused with \(error)")
        }
    }
    let answer = [bytes[...], ArraySlice("s:\(id)".utf8)]
    let nows: [Int64] = [1_800_000_000_000, 0, .max, .min]
    do {
        let elements = try PM2RPC.table(fromAnswer: answer, id: id)
        for now in nows { _ = try? PM2ProcessTable(elements: elements, nowMilliseconds: now) }
    } catch {
        switch error {
        case .malformed, .daemonError: break
        default: FuzzCheck.require(false, "the answer reader refused with \(error)")
        }
    }
    for now in nows { _ = try? PM2ProcessTable(jlistOutput: bytes, nowMilliseconds: now) }
    return 0
}
