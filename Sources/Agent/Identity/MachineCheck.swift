import ArgumentParser
import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `<state dir>/machine.json`: the machine this agent's state directory belongs to, written at enrolment (or by the
/// first start of an agent enrolled before the check existed).
struct MachineRecord: Sendable, Equatable {
    var identity: MachineIdentity
    /// The host's name when recorded, for the message a copy gets.
    var hostname: String
    var recordedAt: Date

    var json: JSONValue {
        .object([
            "source": .string(identity.source.rawValue), "id": .string(identity.value), "hostname": .string(hostname),
            "recordedAt": .string(Timestamp.format(recordedAt)),
        ])
    }

    init(identity: MachineIdentity, hostname: String, recordedAt: Date) {
        self.identity = identity
        self.hostname = hostname
        self.recordedAt = recordedAt
    }

    init(json: JSONValue) throws(DocumentError) {
        var reader = try ObjectReader(json, path: "")
        let source = try reader.required("source", Field.enumeration(MachineIdentitySource.self))
        identity = MachineIdentity(source: source, value: try reader.required("id", Field.string(maxLength: 128)))
        hostname = try reader.required("hostname", Field.string(maxLength: 256))
        recordedAt = try reader.required("recordedAt", Timestamp.field)
        try reader.rejectUnknownFields()
    }

    /// The record at `path`, or `nil` when there is none.
    static func load(_ path: String) throws(MachineCheck.Failure) -> MachineRecord? {
        let bytes: [UInt8]?
        do {
            bytes = try SmallFile.read(path, limit: 4096)
        } catch {
            throw MachineCheck.Failure(description: "cannot read \(path): \(error)")
        }
        guard let bytes else { return nil }
        do {
            guard bytes.count <= 4096 else { throw DocumentError.invalidValue(field: "", reason: "larger than 4 KiB") }
            return try MachineRecord(json: JSONValue.parse(bytes))
        } catch {
            throw MachineCheck.Failure(
                description:
                    "\(path) is not a machine record (\(error)); if this is the machine the agent was enrolled on, delete the file and start the agent again"
            )
        }
    }

    func write(to path: String) throws {
        var bytes = json.encoded()
        bytes.append(0x0a)
        // Not secret (an instance id, or a digest of the machine id), and readable by the agent's user when root enrols.
        try AtomicFile.write(bytes, to: path, mode: 0o644)
    }
}

/// Is this the machine the agent's state directory was enrolled on? Asked by `run` and `once` before the agent speaks
/// for its identity, and by `check-machine` for scripts (the cloud-init bootstrap enrols a copy afresh).
enum MachineCheck {
    /// The exit status of `run`, `once` and `check-machine` on a copy: EX_CONFIG, which the systemd unit does not
    /// restart (`RestartPreventExitStatus=78`).
    static let copyExitStatus: Int32 = 78

    struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        var description: String
    }

    enum Outcome: Sendable, Equatable {
        /// `machineIdentity: none`.
        case off
        /// This machine's identity could not be read; nothing is decided.
        case unknown(reason: String)
        /// The recorded machine is this one.
        case same(MachineIdentity)
        /// Nothing recorded yet (an agent enrolled before the check), or recorded from another source than the one
        /// configured now: this machine is to be recorded.
        case unrecorded(MachineIdentity, previous: MachineRecord?)
        /// The state directory belongs to another machine.
        case otherMachine(recorded: MachineRecord, current: MachineIdentity)
    }

    /// Compares this machine with the record in `layout`. Writes nothing.
    static func check(layout: AgentLayout, reader: MachineIdentityReader) async throws(Failure) -> Outcome {
        if reader.configuration.source == .none { return .off }
        let recorded = try MachineRecord.load(layout.machineFile)
        let current: MachineIdentity
        do {
            guard let identity = try await reader.read() else { return .off }
            current = identity
        } catch {
            return .unknown(reason: error.description)
        }
        guard let recorded, recorded.identity.source == current.source else { return .unrecorded(current, previous: recorded) }
        return recorded.identity == current ? .same(current) : .otherMachine(recorded: recorded, current: current)
    }

    /// One line on what `outcome` means, for people (`check-machine`, `status`), and whether it is a problem.
    static func summary(_ outcome: Outcome, layout: AgentLayout) -> (text: String, problem: Bool) {
        switch outcome {
        case .off:
            return ("the machine check is off (machineIdentity: none)", false)
        case .same(let identity):
            return ("this machine (\(identity)) is the one the agent was enrolled on", false)
        case .unrecorded(let identity, nil):
            return ("no machine recorded yet; the agent records this one (\(identity)) when it starts", false)
        case .unrecorded(let identity, .some(let previous)):
            return ("recorded as \(previous.identity); the agent records this machine (\(identity)) when it starts", false)
        case .unknown(let reason):
            return ("cannot tell: \(reason)", true)
        case .otherMachine(let recorded, let current):
            return (copyMessage(recorded: recorded, current: current, layout: layout), true)
        }
    }

    /// What a copy is told.
    static func copyMessage(recorded: MachineRecord, current: MachineIdentity, layout: AgentLayout) -> String {
        """
        this agent's state directory \(layout.stateDir) was enrolled on another machine (\(recorded.identity), host \
        \(recorded.hostname), recorded \(Timestamp.format(recorded.recordedAt))); this machine is \(current). It is a copy — a \
        machine image baked after enrolment, or a copied state directory — and two machines must not speak as one agent: \
        their reports would overwrite each other's. The agent stops here. Enrol this machine as an agent of its own \
        (`ferry-agent enroll --force --name NAME ...`; the cloud-init bootstrap does it at the next boot). If it really is \
        the same machine and its identity changed, delete \(layout.machineFile) and start the agent again.
        """
    }

    /// Records this machine as the state directory's (at enrolment).
    static func record(_ identity: MachineIdentity, layout: AgentLayout, hostname: String, now: Date = Date()) throws {
        try MachineRecord(identity: identity, hostname: hostname, recordedAt: now).write(to: layout.machineFile)
    }

    /// The check `run` and `once` make: a copy stops with `copyExitStatus`; an agent with nothing recorded records this
    /// machine; an identity that cannot be read is logged and does not stop the agent.
    static func enforce(config: AgentConfig, logger: Logger) async throws {
        let layout = AgentLayout(stateDir: config.stateDir)
        // A record that cannot be read stops the agent like any configuration error (status 1, the reason on stderr).
        let outcome = try await check(layout: layout, reader: MachineIdentityReader(configuration: config.machineIdentityReader))
        switch outcome {
        case .off, .same:
            return
        case .unknown(let reason):
            logger.warning(
                "cannot tell whether this is the machine the agent was enrolled on, going on without the check: \(reason)",
                metadata: ["ferry.machine_identity": "\(config.machineIdentity.rawValue)"]
            )
        case .unrecorded(let identity, let previous):
            do {
                try record(identity, layout: layout, hostname: AgentRuntime.hostname())
                logger.notice(
                    "recorded this machine as the agent's",
                    metadata: ["ferry.machine": "\(identity)", "ferry.replaced": "\(previous.map { "\($0.identity)" } ?? "nothing")"]
                )
            } catch {
                logger.warning("cannot record this machine as the agent's, going on: \(error)", metadata: ["ferry.machine": "\(identity)"])
            }
        case .otherMachine(let recorded, let current):
            logger.critical("\(copyMessage(recorded: recorded, current: current, layout: layout))")
            throw ExitCode(copyExitStatus)
        }
    }
}
