#if canImport(Glibc)
import Glibc
#endif

/// The oracle of a fuzz target: an invariant that must hold for every input. A violation prints what broke and aborts,
/// which libFuzzer records as a crash and saves the input under `.build-fuzz/crashes/<target>/`.
enum FuzzCheck {
    static func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
        guard !condition() else { return }
        let text = "fuzz invariant violated: \(message())\n"
        _ = text.withCString { fputs($0, stderr) }
        abort()
    }
}

/// The fuzzer's input as bytes.
func fuzzBytes(_ data: UnsafePointer<UInt8>, _ size: Int) -> [UInt8] {
    Array(UnsafeBufferPointer(start: data, count: size))
}
