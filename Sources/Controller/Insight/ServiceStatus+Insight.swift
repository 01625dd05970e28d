import Foundation
import Shared

extension ServiceStatus {
    /// The failure an operator should see now: the newest failure of a serial above the one that runs (nothing newer
    /// has replaced it since), or `nil`. After a rollback it is the rolled-back serial, with its diagnosis.
    var currentFailure: ReleaseFailure? {
        failures.first { $0.serial > (serial ?? 0) }
    }

    /// Every field of the status, processes and failures (with their diagnoses) included: the agent detail document.
    func detailJSON(updatedAt: Date) -> JSONValue {
        .object([
            "service": .string(service), "reported": .bool(true),
            "serial": serial.map { .integer($0) } ?? .null,
            "version": version.map { .string($0) } ?? .null,
            "targetSerial": targetSerial.map { .integer($0) } ?? .null,
            "phase": .string(phase.rawValue), "health": .string(health.rawValue), "message": .string(message),
            "updatedAt": .string(Timestamp.format(updatedAt)),
            "processes": .array(processes.map(\.json)),
            "failures": .array(failures.map(\.json)),
            "failure": currentFailure?.json ?? .null,
        ])
    }
}
