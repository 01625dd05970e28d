import Logging
import Shared

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The trust root this agent checks releases against: the root pinned at enrollment, followed step by step through the
/// newer roots its controller serves (TUF's rotation rules, `TrustedRoot.accepting`).
///
/// The roots accepted after the pin are kept in `<stateDir>/trust-root.json` (`{"chain": [envelope, ...]}`, oldest
/// first, written atomically after each step) and verified again from the pin at start, so a restart resumes from the
/// newest one, a controller that later serves an older chain cannot roll the agent back, and a chain that does not
/// follow from the pin (the agent was enrolled again with another root) is not used. While a newer root the controller
/// names cannot be fetched or verified, or the newest accepted one has expired, no new release is admitted: what runs
/// keeps running, and the agent reports why.
actor AgentTrust {
    struct Configuration: Sendable {
        /// How far the agent's clock may lag the signer's before the root counts as expired. Default 5 minutes (the
        /// agent's `clockSkewSeconds`).
        var clockSkewGrace: Duration = .seconds(300)
        /// Most roots followed in one pass (a controller naming a far-away version cannot keep the agent busy). Default 64.
        var maximumStepsPerPass = 64
    }

    /// What the reconciler needs from the trust root for one pass.
    struct Snapshot: Sendable {
        /// The `release` role of the newest accepted root.
        var releasePolicy: TrustPolicy
        /// Why no new release may be installed now, or `nil`.
        var problem: String?
        /// What the status report says about the root (`nil` for a root built from trusted keys with nothing wrong:
        /// the report then reads as it did before roots existed).
        var report: TrustRootStatus?
    }

    let configuration: Configuration
    /// The file keeping the roots accepted after the pin.
    let file: String
    private let logger: Logger
    private(set) var current: TrustedRoot
    /// The roots accepted after the pin, oldest first (what `file` holds).
    private var chain: [Envelope]
    /// The size of `file` holding `chain` (`chainFile(chain).count`), kept as roots are added rather than encoded again.
    private var chainBytes: Int
    /// Why the last catch-up stopped short of the version the controller named, or `nil`.
    private(set) var updateProblem: String?
    /// The stored file named roots beyond what verifies from the pin (damaged, or unreadable): no new release is
    /// admitted until the chain verifies up to `version` again (`Int64.max`: never, until the file is removed). The file
    /// is left as it is meanwhile, so a restart still knows.
    private var storedFloor: (version: Int64, problem: String)?
    /// Roots accepted but not yet written to `file` (the write failed): a restart would start below them.
    private var unsaved = false

    /// Most roots the file keeps: 4096 (a rotation a day for over ten years). The agent accepts no root past it (nor
    /// past `maximumFileBytes` of file), so it never writes a file it could not read back.
    static let maximumStoredRoots = 4096
    /// Largest file read: the roots' payloads are at most 64 KiB each, and a chain is rarely more than a few.
    static let maximumFileBytes = 64 << 20

    /// - Parameters:
    ///   - pinned: the root from the configuration.
    ///   - file: where the roots accepted after the pin are kept. They are verified again from `pinned`, step by step,
    ///     and the longest run that verifies is kept. A chain whose first step does not follow from `pinned` (the agent
    ///     was enrolled again with another root) is ignored with a log line. A file that cannot be read, or whose later
    ///     steps do not verify, holds new releases back (`storedFloor`): the agent could otherwise start below a root that
    ///     revoked a key, and a controller naming an older version would keep it there.
    init(configuration: Configuration = Configuration(), pinned: TrustedRoot, file: String, logger: Logger) {
        self.configuration = configuration
        self.file = file
        self.logger = logger
        var current = pinned
        var chain: [Envelope] = []
        var floor: (version: Int64, problem: String)?
        if FileManager.default.fileExists(atPath: file) {
            do {
                let stored = try Self.readChain(file)
                let steps = Self.steps(stored, above: pinned)
                for (index, envelope) in steps.enumerated() {
                    do {
                        current = try current.accepting(envelope)
                        chain.append(envelope)
                    } catch  where index == 0 && Self.isAnotherPinsChain(error, next: pinned.version + 1, envelope) {
                        logger.warning("ignoring the stored trust roots", metadata: ["ferry.path": "\(file)", "ferry.reason": "\(error)"])
                        break
                    } catch {
                        let highest = steps.compactMap { try? TrustedRoot.decode($0).version }.max() ?? current.version + 1
                        floor = (
                            max(highest, current.version + 1),
                            "the stored trust roots in \(file) name version \(max(highest, current.version + 1)), but version "
                                + "\(current.version + 1) there does not verify (\(error)): no new release is installed until the "
                                + "controller's chain verifies up to that version again"
                        )
                        break
                    }
                }
            } catch {
                floor = (
                    Int64.max,
                    "the stored trust roots in \(file) cannot be read (\(error)): no new release is installed, since this agent may "
                        + "have accepted roots newer than its pin; if the file is damaged, remove it and restart the agent to follow "
                        + "the controller's chain from the pinned root again"
                )
            }
        }
        if let floor { logger.error("trust roots held back", metadata: ["ferry.path": "\(file)", "ferry.reason": "\(floor.problem)"]) }
        self.current = current
        self.chain = chain
        self.chainBytes = Self.chainFile(chain).count
        self.storedFloor = floor
    }

    /// Whether the roots stored in `file` (those above the pin) all verify, step by step, from `pinned`; `true` without
    /// a file. `enroll` sets a chain aside that does not: kept, it held every release back after an enrolment with
    /// another fleet's root (a stored step not signed by the new pin's keys reads as damage), until that fleet's own
    /// chain reached the stored version, with nothing saying to remove the file.
    static func storedChainFollows(from pinned: TrustedRoot, file: String) -> Bool {
        guard FileManager.default.fileExists(atPath: file) else { return true }
        guard let stored = try? readChain(file) else { return false }
        do {
            _ = try pinned.following(steps(stored, above: pinned))
            return true
        } catch {
            return false
        }
    }

    /// The stored roots that are steps from `pinned`: versions at or below it are not (the controller's copy of the
    /// pinned version); an envelope that cannot be read is kept, for `accepting` to say why.
    private static func steps(_ stored: [Envelope], above pinned: TrustedRoot) -> [Envelope] {
        stored.filter { (try? TrustedRoot.decode($0).version).map { $0 > pinned.version } ?? true }
    }

    /// Whether the stored chain's first step failed as a chain that follows another pin does (the agent was enrolled
    /// again with another root): the step right after the pin, readable, not signed by the pin's root keys. Anything else
    /// (a step missing, an envelope that cannot be read) is damage, which holds releases back.
    private static func isAnotherPinsChain(_ error: RootError, next: Int64, _ envelope: Envelope) -> Bool {
        guard case .notSignedByPrevious = error, (try? TrustedRoot.decode(envelope).version) == next else { return false }
        return true
    }

    /// The envelopes of a chain file (or the one envelope of a file written by an early version, which kept only the
    /// newest root).
    private static func readChain(_ file: String) throws -> [Envelope] {
        let bytes: [UInt8]
        do throws(SmallFile.ContentsError) {
            bytes = try SmallFile.contents(of: file, limit: maximumFileBytes)
        } catch {
            throw StoredChainError("\(error)")
        }
        let document = try JSONValue.parse(bytes)
        if case .object(let fields) = document, fields["chain"] == nil, fields["payloadType"] != nil {
            return [try Envelope(json: document, path: "")]
        }
        var reader = try ObjectReader(document, path: "")
        let chain = try reader.required("chain", Field.list(limit: maximumStoredRoots, Envelope.init(json:path:)))
        try reader.rejectUnknownFields()
        return chain
    }

    /// The chain file's bytes.
    private static func chainFile(_ chain: [Envelope]) -> [UInt8] {
        Array(JSONValue.object(["chain": .array(chain.map(\.json))]).encoded())
    }

    /// Follows the controller's chain up to `target` (the desired state's `rootVersion`): fetches each next version
    /// with `fetch`, verifies it against the current root, stores it. Stops at the first version that cannot be
    /// fetched or is refused, and remembers why (`updateProblem`) until a later catch-up gets through.
    func catchUp(to target: Int64?, fetch: @Sendable (Int64) async throws -> Envelope) async {
        defer {
            if let floor = storedFloor, current.version >= floor.version {
                storedFloor = nil
                logger.info("trust roots verified again", metadata: ["ferry.root.version": "\(current.version)"])
            }
            store()
        }
        guard let target, target > current.version else {
            updateProblem = nil
            return
        }
        var steps = 0
        while current.version < target {
            guard steps < configuration.maximumStepsPerPass else {
                updateProblem = "trust root version \(current.version) accepted, the controller names version \(target): continuing next pass"
                return
            }
            let next = current.version + 1
            let envelope: Envelope
            do {
                envelope = try await fetch(next)
            } catch {
                updateProblem = "cannot fetch trust root version \(next) (the controller names version \(target)): \(error)"
                return
            }
            // The file grows by the envelope and, past the first, a comma.
            let grownBytes = chainBytes + envelope.json.encoded().count + (chain.isEmpty ? 0 : 1)
            guard chain.count < Self.maximumStoredRoots, grownBytes <= Self.maximumFileBytes else {
                updateProblem =
                    "trust root version \(next) not accepted: this agent keeps at most \(Self.maximumStoredRoots) roots after its pin "
                    + "(\(Self.maximumFileBytes >> 20) MiB); enroll it again with a newer root"
                return
            }
            let accepted: TrustedRoot
            do {
                accepted = try current.accepting(envelope)
            } catch {
                updateProblem = "trust root version \(next) refused: \(error)"
                logger.warning("trust root refused", metadata: ["ferry.root.version": "\(next)", "ferry.reason": "\(error)"])
                return
            }
            chain.append(envelope)
            chainBytes = grownBytes
            unsaved = true
            logger.info(
                "trust root accepted",
                metadata: [
                    "ferry.root.version": "\(accepted.version)",
                    "ferry.root.release_keys": "\(accepted.root.releaseRole.keyIDs.map { String($0.prefix(12)) }.joined(separator: ","))",
                ]
            )
            current = accepted
            steps += 1
        }
        updateProblem = nil
    }

    /// Writes the chain when roots were accepted since the last write, unless the stored file is held back
    /// (`storedFloor`: it is kept as it is until the chain verifies past it).
    private func store() {
        guard unsaved, storedFloor == nil else { return }
        do {
            let bytes = Self.chainFile(chain)
            assert(bytes.count == chainBytes, "chainBytes went out of step with the file")
            try AtomicFile.write(bytes, to: file, mode: 0o600)
            unsaved = false
        } catch {
            logger.warning("cannot store the trust root", metadata: ["ferry.path": "\(file)", "ferry.reason": "\(error)"])
        }
    }

    /// The root's verdict for a pass at `now`.
    func snapshot(at now: Date) -> Snapshot {
        var problem = updateProblem ?? storedFloor?.problem
        if problem == nil, unsaved {
            // A restart would start below the roots accepted since: a controller naming an older version would keep it
            // there. Written again at every catch-up.
            problem =
                "cannot store trust root version \(current.version) in \(file): no new release is installed until it is stored "
                + "(is the disk full?)"
        }
        let root = current.root
        if problem == nil, root.isExpired(at: now, grace: configuration.clockSkewGrace) {
            problem =
                "trust root expired: version \(root.version) expired at \(Timestamp.format(root.expiresAt)); no new release is "
                + "installed until operators publish a renewed root (what runs keeps running)"
        }
        let report: TrustRootStatus? =
            current.isFromTrustedKeys && problem == nil
            ? nil : TrustRootStatus(version: current.version, expiresAt: current.isFromTrustedKeys ? nil : root.expiresAt, problem: problem)
        return Snapshot(releasePolicy: root.policy(for: .release), problem: problem, report: report)
    }
}

/// Why the stored chain file was not used.
private struct StoredChainError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
