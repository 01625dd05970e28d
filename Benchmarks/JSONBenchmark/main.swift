// Times `JSONValue.parse` on one file, for scripts/bench-json.sh (which runs the baseline in the same session).
//
// usage: JSONBenchmark FILE [RUNS] [--jsondecoder]
// Prints one line: `best_ms=<best> median_ms=<median> bytes=<n> result=<parsed|refused: reason>`.
// `--jsondecoder` times the path JSONValue.parse replaced (`JSONDecoder` through JSONValue's `Codable` conformance),
// for reference.

import Foundation
import Shared

let arguments = CommandLine.arguments
guard arguments.count >= 2, let data = FileManager.default.contents(atPath: arguments[1]) else {
    print("usage: JSONBenchmark FILE [RUNS] [--jsondecoder]")
    exit(2)
}
let runs = arguments.count >= 3 ? max(1, Int(arguments[2]) ?? 20) : 20
let legacy = arguments.contains("--jsondecoder")
let bytes = [UInt8](data)
let clock = ContinuousClock()
var times: [Duration] = []
var result = ""
for _ in 0..<runs {
    let start = clock.now
    do {
        let value = legacy ? try JSONDecoder().decode(JSONValue.self, from: data) : try JSONValue.parse(bytes)
        times.append(start.duration(to: clock.now))
        if case .array(let items) = value { result = "parsed (\(items.count) top-level items)" } else { result = "parsed" }
    } catch {
        times.append(start.duration(to: clock.now))
        result = "refused: \(error)"
    }
}
func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}
let sorted = times.sorted()
print(
    "best_ms=\(String(format: "%.3f", milliseconds(sorted[0]))) median_ms=\(String(format: "%.3f", milliseconds(sorted[sorted.count / 2]))) bytes=\(bytes.count) result=\(result)"
)
