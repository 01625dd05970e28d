import ArgumentParser
import Logging
import Shared

#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `ferry-agent enroll`: trade an enrollment token for this instance's own agent token and write the config.
struct EnrollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll",
        abstract: "Enroll this instance with a controller and write the agent configuration and token.",
        discussion: """
            Trades the enrollment token (role `enroll`) for an agent token, then writes the token file \
            (<state-dir>/agent.token, mode 0600) and the configuration (--config, mode 0600). The agent token is chosen \
            here and only its SHA-256 is sent; it is kept in <state-dir>/agent.token.pending until the enrolment is \
            written, so a run that lost the controller's answer and runs again is answered again instead of refused. \
            An unreachable controller or a 5xx answer is tried again after 1 s, 2 s and 4 s. The trust root is pinned \
            here: --trust-root names a signed root file (from `ferry-controller root init` and `root sign`), or \
            --trusted-key (repeatable) with --threshold builds root 1 from operator keys, as before roots existed. Either \
            is loaded and checked first, so a typo fails before anything is written. Newer roots the controller serves \
            are followed from this pin, each step verified. An existing configuration is never overwritten without --force.
            """
    )

    @Option(name: .long, help: "The controller's base URL.") var controller: String
    @Option(name: .long, help: "An enrollment token (role `enroll`). Prefer --token-file: arguments are visible in /proc.")
    var token: String?
    @Option(name: .long, help: ArgumentHelp("A file holding the enrollment token, or - for standard input.", valueName: "FILE"))
    var tokenFile: String?
    @Option(name: .long, help: "A service this instance runs. Repeatable.") var service: [String] = []
    @Option(name: .long, help: "Where to write the agent configuration.") var config: String
    @Option(name: .long, help: ArgumentHelp("A trusted operator public key (PEM). Repeatable.", valueName: "FILE.pub"))
    var trustedKey: [String] = []
    @Option(name: .long, help: "Distinct trusted keys that must sign a release.") var threshold: Int = 1
    @Option(
        name: .long,
        help: ArgumentHelp("A signed trust root to pin instead of --trusted-key (signed by its own root keys).", valueName: "FILE")
    )
    var trustRoot: String?
    @Option(name: .long, help: "This agent's name on the dashboard (default: the hostname).") var name: String?
    @Option(name: .long, help: "State directory.") var stateDir: String = "/var/lib/ferry"
    @Option(name: .long, help: "Directory of the instance env files (<service>.env).") var envDir: String = "/etc/ferry/env"
    @Option(name: .long, help: "auto (PM2 when found on PATH at the agent's first start, then the one it recorded), pm2 or builtin.")
    var processManager: String = "auto"
    @Option(name: .long, help: "Seconds between passes when not long-polling.") var pollSeconds: Int = 15
    @Option(name: .long, help: ArgumentHelp("Path of the pm2 binary.", valueName: "PATH")) var pm2: String?
    @Option(name: .long, help: ArgumentHelp("PM2_HOME of the pm2 daemon Ferry drives.", valueName: "DIR")) var pm2Home: String?
    @Option(name: .long, help: ArgumentHelp("CA bundle (PEM) for the controller's TLS certificate.", valueName: "FILE")) var caFile: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "How the agent tells this machine from a copy of it (an image baked after enrolment): machine-id (default), ec2 (the instance id, new on every instance; enrolment also sends the signed instance identity document) or none.",
            valueName: "SOURCE"
        )
    )
    var machineIdentity: String?
    @Option(name: .long, help: ArgumentHelp("The instance metadata service, for --machine-identity ec2.", valueName: "URL"))
    var instanceMetadataUrl: String = MachineIdentityReader.Configuration.defaultMetadataURL
    @Option(name: .long, help: ArgumentHelp("systemd's machine id file, for --machine-identity machine-id.", valueName: "FILE"))
    var machineIdFile: String = MachineIdentityReader.Configuration.defaultMachineIDFile
    @Flag(name: .long, help: "Overwrite an existing configuration.") var force = false
    @Flag(
        name: .long,
        help: "Allow a plain http:// controller URL whose host is not loopback (the token and releases travel unencrypted)."
    )
    var allowInsecureHttp = false
    @Flag(
        name: .long,
        help: "Replace the controller's agent of the same name: keeps its id, its old token stops working (needs an operator token)."
    )
    var replace = false

    func validate() throws {
        guard (token == nil) != (tokenFile == nil) else { throw ValidationError("give exactly one of --token and --token-file") }
        guard !service.isEmpty else { throw ValidationError("at least one --service is required") }
        for name in service where !Release.isValidServiceName(name) {
            throw ValidationError("--service \(name) must match ^[a-z0-9][a-z0-9-]{0,62}$")
        }
        guard Set(service).count == service.count else {
            let repeated = service.filter { name in service.filter { $0 == name }.count > 1 }
            throw ValidationError("--service \(repeated[0]) is given more than once")
        }
        if trustRoot != nil {
            guard trustedKey.isEmpty, threshold == 1 else {
                throw ValidationError("give either --trust-root or --trusted-key/--threshold, not both: the root names its keys and thresholds")
            }
        } else {
            guard !trustedKey.isEmpty else { throw ValidationError("at least one --trusted-key (or a signed --trust-root) is required") }
        }
        guard ProcessManagerKind(rawValue: processManager) != nil else {
            throw ValidationError("--process-manager must be auto, pm2 or builtin")
        }
        if let name, let problem = EnrollRequest.nameProblem(name) { throw ValidationError("--name \(problem)") }
        guard (1...3600).contains(pollSeconds) else { throw ValidationError("--poll-seconds must be between 1 and 3600") }
        if let machineIdentity, MachineIdentitySource(rawValue: machineIdentity) == nil {
            throw ValidationError("--machine-identity must be machine-id, ec2 or none")
        }
        guard instanceMetadataUrl.hasPrefix("http://") || instanceMetadataUrl.hasPrefix("https://") else {
            throw ValidationError("--instance-metadata-url must be an http:// or https:// URL")
        }
        guard controller.hasPrefix("http://") || controller.hasPrefix("https://") else {
            throw ValidationError("--controller must be an http:// or https:// URL")
        }
        do {
            try TransportRule.check(controllerURL: controller, allowInsecureHTTP: allowInsecureHttp)
        } catch {
            throw ValidationError("--controller: \(error.reason)")
        }
    }

    /// An older controller's answer to an enrolment that carries `instanceIdentity`: the field is unknown to it.
    static func refusesInstanceIdentity(_ error: ControllerError) -> Bool { refusesField("instanceIdentity", error) }

    /// Whether the controller refused the request's field `field` as unknown (a version older than the field).
    static func refusesField(_ field: String, _ error: ControllerError) -> Bool {
        guard case .rejected(_, 400, let code, let message) = error else { return false }
        return code == "unknown_field" && message.contains("\(field): unknown field")
    }

    /// Whether trying again soon may work: the controller could not be reached, the transfer broke, or it answered
    /// 5xx. Not a certificate it fails to prove (that needs an operator), nor a refusal.
    static func isTransient(_ error: ControllerError) -> Bool {
        switch error {
        case .unreachable(let cause):
            switch cause {
            case .connectionFailed, .timedOut, .transferFailed: true
            default: false
            }
        case .rejected(_, let status, _, _): status >= 500
        case .invalidResponse: false
        }
    }

    /// Whether the controller may have stored the enrolment although the command failed: the request may have reached
    /// it and its answer was lost (a timeout or a broken transfer after sending, a 5xx from a proxy, an answer that
    /// could not be read). Not when it could not be reached or proven, or refused.
    static func mayHaveEnrolled(_ error: ControllerError) -> Bool {
        switch error {
        case .unreachable(let cause):
            switch cause {
            case .timedOut, .transferFailed: true
            default: false
            }
        case .rejected(_, let status, _, _): status >= 500
        case .invalidResponse: true
        }
    }

    /// The agent token this enrolment offers, kept in `<state-dir>/agent.token.pending` (mode 0600) until the
    /// enrolment is written: a run that is stopped, or loses the controller's answer, and runs again offers the same
    /// token, which the controller answers again (`EnrollRequest.tokenSHA256`) instead of refusing a taken name.
    /// - Returns: the token, and whether this call made it (`false`: an earlier run's, kept).
    static func pendingToken(in stateDir: String) throws -> (token: String, made: Bool) {
        let path = "\(stateDir)/agent.token.pending"
        if let text = try? KeyFile.read(path) {
            let token = text.trimmingCharacters(in: [" ", "\n", "\r", "\t"])
            if Token.isWellFormed(token) { return (token, false) }
        }
        return (try newPendingToken(in: stateDir), true)
    }

    /// A fresh token, written as the pending one.
    static func newPendingToken(in stateDir: String) throws -> String {
        let token = Token.generate()
        try AtomicFile.write(Array((token + "\n").utf8), to: "\(stateDir)/agent.token.pending", mode: 0o600)
        return token
    }

    /// Sends the enrolment, trying again (1 s, 2 s, 4 s apart) while the controller is unreachable or answers 5xx: the
    /// token is the agent's own, so a retry after a lost answer is answered again. A controller older than a field this
    /// agent sends refuses it as unknown: sent again without it (the instance proof: not checked; the chosen token: one
    /// is issued instead).
    ///
    /// A pending token the controller holds for another agent (`409 token_in_use`: an earlier run enrolled under another
    /// name and lost the answer) is replaced by a fresh one. `mayHaveEnrolled` is set when any attempt may have reached
    /// the controller and been stored there (`mayHaveEnrolled(_:)`), whatever the last one says.
    static func send(
        _ request: EnrollRequest,
        to controller: String,
        enrollToken: String,
        chosenToken: String,
        stateDir: String,
        mayHaveEnrolled: inout Bool,
        http: HTTPClient
    ) async throws -> EnrollResponse {
        var request = request
        var chosen: String? = chosenToken
        var attempt = 0
        var replacedToken = false
        while true {
            attempt += 1
            do {
                return try await AgentControllerClient.enroll(
                    baseURL: controller,
                    enrollToken: enrollToken,
                    request: request,
                    chosenToken: chosen,
                    http: http
                )
            } catch {
                if Self.mayHaveEnrolled(error) { mayHaveEnrolled = true }
                if chosen != nil, !replacedToken, case .rejected(_, 409, "token_in_use", _) = error {
                    printError("note: the controller holds this enrolment's pending token for another agent; offering a new one")
                    chosen = try newPendingToken(in: stateDir)
                    replacedToken = true
                    continue
                }
                if request.instanceIdentity != nil, refusesInstanceIdentity(error) {
                    // Nothing was used up by the refusal.
                    printError("note: the controller does not check instance identity documents (an older version); enrolling without one")
                    request.instanceIdentity = nil
                    continue
                }
                if chosen != nil, refusesField("tokenSHA256", error) {
                    printError("note: the controller issues agent tokens itself (an older version); a lost answer cannot be asked for again")
                    chosen = nil
                    continue
                }
                guard isTransient(error), chosen != nil, attempt < 4 else { throw error }
                let pause = 1 << (attempt - 1)
                printError("warning: enrolment attempt \(attempt) failed (\(error)); trying again in \(pause) s")
                try await Task.sleep(for: .seconds(pause))
            }
        }
    }

    func run() async throws {
        let manager = FileManager.default
        if manager.fileExists(atPath: config), !force {
            throw ValidationError("\(config) already exists; this instance looks enrolled (use --force to enroll again)")
        }
        let stateDir = Self.absolute(self.stateDir)
        let keyPaths = trustedKey.map(Self.absolute)
        let rootPath = trustRoot.map(Self.absolute)
        var rootDigest: SHA256Digest?
        let pinnedRoot: TrustedRoot
        if let rootPath {
            let (pinned, digest) = try AgentConfig.loadRoot(rootPath)
            rootDigest = digest
            pinnedRoot = pinned
            print(
                "pinning trust root version \(pinned.version) (release keys: \(pinned.root.releaseRole.threshold) of \(pinned.root.releaseRole.keyIDs.count))"
            )
        } else {
            let keys = try keyPaths.map { try PublicKey(contentsOf: $0) }
            _ = try TrustPolicy(trustedKeys: keys, threshold: threshold)
            pinnedRoot = try TrustedRoot.fromTrustedKeys(keys, threshold: threshold)
        }

        // This machine's identity is read before the controller is asked: a source named on the command line that
        // cannot be read fails here, with nothing written and no enrolment used up. The default only warns (a host
        // without /etc/machine-id, a container), and the agent records the machine at its first start instead.
        var identityReader = MachineIdentityReader.Configuration(source: machineIdentity.flatMap(MachineIdentitySource.init) ?? .machineID)
        identityReader.machineIDFile = Self.absolute(machineIdFile)
        identityReader.metadataURL = instanceMetadataUrl
        var identity: MachineIdentity?
        do {
            identity = try await MachineIdentityReader(configuration: identityReader).read()
        } catch {
            guard machineIdentity == nil else {
                throw ValidationError("--machine-identity \(identityReader.source.rawValue): \(error) (--machine-identity none turns the check off)")
            }
            printError("warning: this machine could not be identified, so a copy of it would not be told apart: \(error)")
        }
        // An EC2 instance also proves who it is: a controller set up for it enrolls only instances that do, each once.
        var proof: InstanceIdentityProof?
        if identity?.source == .ec2 {
            do {
                proof = try await MachineIdentityReader(configuration: identityReader).instanceIdentityProof()
            } catch {
                printError("warning: the instance identity document could not be read, so this enrolment proves no instance: \(error)")
            }
        }

        var httpConfiguration = HTTPClient.Configuration()
        httpConfiguration.caFile = caFile.map(Self.absolute)
        let hostname = AgentRuntime.hostname()
        if name == nil, let problem = EnrollRequest.nameProblem(hostname) {
            throw ValidationError("this host's name \"\(hostname)\" cannot name the agent (it \(problem)); give one with --name")
        }
        let enrollToken: String
        if let token {
            enrollToken = token
        } else if tokenFile == "-" {
            enrollToken = (readLine(strippingNewline: true) ?? "").trimmingCharacters(in: [" ", "\t", "\r"])
        } else {
            enrollToken = try KeyFile.read(Self.absolute(tokenFile ?? "")).trimmingCharacters(in: [" ", "\n", "\r", "\t"])
        }
        guard !enrollToken.isEmpty else { throw ValidationError("the enrollment token is empty") }
        let request = EnrollRequest(name: name ?? hostname, hostname: hostname, services: service, replace: replace, instanceIdentity: proof)
        let http = HTTPClient(configuration: httpConfiguration)
        let madeStateDir = !manager.fileExists(atPath: stateDir)
        try Self.makePrivateDirectory(stateDir)
        try Self.lockStateDirectory(stateDir)
        let pending = try Self.pendingToken(in: stateDir)
        let response: EnrollResponse
        var mayHaveEnrolled = false
        do {
            response = try await Self.send(
                request,
                to: controller,
                enrollToken: enrollToken,
                chosenToken: pending.token,
                stateDir: stateDir,
                mayHaveEnrolled: &mayHaveEnrolled,
                http: http
            )
        } catch {
            if mayHaveEnrolled || !pending.made {
                // Kept: the controller may hold it (this run's answer, or an earlier run's, was lost).
                printError(
                    "note: the controller may have enrolled this instance without its answer arriving; running this command "
                        + "again offers the same token (\(stateDir)/agent.token.pending) and is answered again"
                )
            } else {
                // Nothing of this run reached the controller, or it refused: nothing is kept, as if it had not run.
                unlink("\(stateDir)/agent.token.pending")
                if madeStateDir {
                    unlink(AgentLayout(stateDir: stateDir).lockFile)
                    rmdir(stateDir)
                }
            }
            throw error
        }

        let tokenFile = "\(stateDir)/agent.token"
        let configPath = Self.absolute(config)
        let layout = AgentLayout(stateDir: stateDir)
        let parent = String(configPath[..<(configPath.lastIndex(of: "/") ?? configPath.startIndex)])
        if !parent.isEmpty { try manager.createDirectory(atPath: parent, withIntermediateDirectories: true) }
        // What the enrolment replaces, put back if any step of it fails: a failure halfway (a full disk, a file that
        // cannot be written) used to leave the new token beside the old config, or the new pin beside it, and the agent
        // refused to start (or polled with a token not its own) until someone enrolled again.
        // But with --replace the new token stays: the controller revoked the old one when it answered (the agent keeps
        // its id, so the earlier config works with the new token; put back, the old token was refused at every poll).
        let previous = EnrolmentFiles.snapshot(
            (replace ? [] : [tokenFile]) + [TrustPin.path(stateDir: stateDir), configPath, layout.machineFile]
        )
        var setAside: (from: String, to: String)?
        do {
            try writeEnrolment(
                response,
                tokenFile: tokenFile,
                configPath: configPath,
                layout: layout,
                pinnedRoot: pinnedRoot,
                pin: (rootDigest, keyPaths, rootPath),
                identity: identity,
                identityReader: identityReader,
                hostname: hostname,
                setAside: &setAside
            )
        } catch {
            previous.restore()
            if let setAside { rename(setAside.to, setAside.from) }
            printError(
                "note: the enrolment was not written (\(error)); the files of the earlier enrolment, if any, were put back"
                    + (replace ? ", but for the new token (the controller revoked the old one)" : "")
                    + ". Running this command again is answered with the same enrolment (\(stateDir)/agent.token.pending)"
            )
            throw error
        }
        // Enrolled and written: the next enrolment (--force) offers a new token.
        unlink("\(stateDir)/agent.token.pending")
        print("enrolled as agent \(response.agentID) for \(service.joined(separator: ", "))")
        print("config: \(configPath)")
        print("token: \(tokenFile)")
        if let identity { print("machine: \(identity) (\(layout.machineFile))") }
    }

    /// Writes what an enrolment leaves on the instance: the token, the trust pin, the config and the machine record,
    /// setting aside trust roots of another pin (`setAside` says where to, so a failure can put them back).
    private func writeEnrolment(
        _ response: EnrollResponse,
        tokenFile: String,
        configPath: String,
        layout: AgentLayout,
        pinnedRoot: TrustedRoot,
        pin pinned: (rootDigest: SHA256Digest?, keyPaths: [String], rootPath: String?),
        identity: MachineIdentity?,
        identityReader: MachineIdentityReader.Configuration,
        hostname: String,
        setAside: inout (from: String, to: String)?
    ) throws {
        let stateDir = layout.stateDir
        let keyPaths = pinned.keyPaths
        let rootPath = pinned.rootPath
        let rootDigest = pinned.rootDigest
        try AtomicFile.write(Array((response.token + "\n").utf8), to: tokenFile, mode: 0o600)

        var agentConfig = AgentConfig(
            controllerURL: controller,
            agentID: response.agentID,
            tokenFile: tokenFile,
            services: service,
            trustedKeys: keyPaths,
            threshold: threshold,
            stateDir: stateDir
        )
        agentConfig.trustRoot = rootPath
        // Which root file or keys this enrolment pinned, beside the config that names them by path (`TrustPin`).
        let pin = TrustPin(
            trustRootSHA256: rootDigest,
            trustedKeyIDs: rootPath == nil ? try keyPaths.map { try PublicKey(contentsOf: $0).keyID } : nil,
            threshold: rootPath == nil ? threshold : nil
        )
        agentConfig.envDir = Self.absolute(envDir)
        agentConfig.pollSeconds = pollSeconds
        agentConfig.processManager = ProcessManagerKind(rawValue: processManager) ?? .auto
        agentConfig.pm2Path = pm2.map(Self.absolute)
        agentConfig.pm2Home = pm2Home.map(Self.absolute)
        agentConfig.caFile = caFile.map(Self.absolute)
        agentConfig.allowInsecureHttp = allowInsecureHttp
        agentConfig.machineIdentity = identityReader.source
        agentConfig.machineIDFile = identityReader.machineIDFile
        agentConfig.instanceMetadataURL = identityReader.metadataURL
        var text = agentConfig.json.encoded()
        text.append(0x0a)
        setAside = try setAsideRootsOfAnotherPin(pinnedRoot, layout: layout)
        try pin.write(stateDir: stateDir)
        try AtomicFile.write(Array(text), to: configPath, mode: 0o600)
        if let identity {
            try MachineCheck.record(identity, layout: layout, hostname: hostname)
        } else {
            // A record from an earlier enrolment must not outlive it: the first start records this machine.
            try? FileManager.default.removeItem(atPath: layout.machineFile)
        }
        try Self.giveToStateDirectoryOwner(
            stateDir,
            files: [tokenFile, TrustPin.path(stateDir: stateDir)] + (identity == nil ? [] : [layout.machineFile])
        )
        try Self.letStateDirectoryOwnerRead(configPath, stateDir: stateDir)
    }

    /// Sets aside the trust roots an earlier enrolment stored when they do not follow from the root pinned now (an
    /// enrolment with another fleet's root): renamed, not removed, and said. Roots that do follow (the same fleet) are
    /// kept: they are what keeps a controller from taking the agent back to an older root.
    /// - Returns: where the file went, when it was set aside.
    private func setAsideRootsOfAnotherPin(_ pinned: TrustedRoot, layout: AgentLayout) throws -> (from: String, to: String)? {
        let file = layout.trustRootFile
        guard !AgentTrust.storedChainFollows(from: pinned, file: file) else { return nil }
        let aside = "\(file).set-aside-\(Int64(Date().timeIntervalSince1970))"
        guard rename(file, aside) == 0 else {
            throw ValidationError(
                "\(file) holds trust roots that do not follow from the root pinned now, and cannot be set aside (\(String(cString: strerror(errno)))): "
                    + "move it away and enroll again"
            )
        }
        print(
            "set aside \(file) as \(aside): its trust roots do not follow from the root pinned now (version \(pinned.version)); the agent "
                + "follows the controller's chain from the new pin"
        )
        return (file, aside)
    }

    /// Gives `files` (written in the state directory) to the state directory's owner when enroll runs as root and the
    /// directory is another user's: enroll runs as root (cloud-init, `install-agent.sh`), the agent as that user, and
    /// a token or trust pin left root's (mode 0600) stops the agent at every start.
    static func giveToStateDirectoryOwner(_ stateDir: String, files: [String]) throws {
        guard geteuid() == 0 else { return }
        var directory = stat()
        guard stat(stateDir, &directory) == 0 else {
            throw ValidationError("cannot read the owner of the state directory \(stateDir): \(String(cString: strerror(errno)))")
        }
        guard directory.st_uid != 0 else { return }
        for file in files where lchown(file, directory.st_uid, directory.st_gid) != 0 {
            throw ValidationError(
                "cannot give \(file) to the state directory's owner (uid \(directory.st_uid)): \(String(cString: strerror(errno))); "
                    + "the agent running as that user could not read it"
            )
        }
    }

    /// Takes the state directory's lock (`StateDirectoryLock`) for the rest of the enrolment, before the controller is
    /// asked, and gives its file to the directory's owner (the agent opens it as that user).
    ///
    /// An agent running on the directory keeps the enrolment it started with: its token (which `--replace` revokes at
    /// once, so it would poll on refused), its config, and its trust roots in memory, which it writes back over the
    /// `trust-root.json` this enrolment sets aside the next time it accepts a root; after a restart under the new pin,
    /// that chain counted as damage and held every release back. So enrolling again waits for the agent to stop.
    /// - Throws: `ValidationError` naming the running agent, or why the lock could not be taken.
    static func lockStateDirectory(_ stateDir: String) throws {
        do {
            try StateDirectoryLock.acquire(stateDir: stateDir)
        } catch let held as StateDirectoryLock.Held {
            throw ValidationError(
                "cannot enroll while \(held.holder.map { "ferry-agent (pid \($0))" } ?? "a ferry-agent") runs on \(stateDir): it would keep "
                    + "its old token and trust roots; stop it first (systemctl stop ferry-agent), enroll, then start it again "
                    + "(install-agent.sh does this itself)"
            )
        } catch {
            throw ValidationError("\(error)")
        }
        try giveToStateDirectoryOwner(stateDir, files: [AgentLayout(stateDir: stateDir).lockFile])
    }

    /// Makes the config (written as root, 0600) root's and readable by the state directory owner's group (0640), as
    /// `install-agent.sh` sets it: the config holds no secret (the token is a file of its own), and the agent runs as
    /// that user. A bare `enroll --force` as root, as `ferry-agent` itself advises after a machine change, used to
    /// leave a config the agent could not read. Nothing when not root or when the directory is root's.
    static func letStateDirectoryOwnerRead(_ config: String, stateDir: String) throws {
        guard geteuid() == 0 else { return }
        var directory = stat()
        guard stat(stateDir, &directory) == 0, directory.st_uid != 0 else { return }
        guard chown(config, 0, directory.st_gid) == 0, chmod(config, 0o640) == 0 else {
            throw ValidationError(
                "cannot let the state directory's owner (gid \(directory.st_gid)) read \(config): \(String(cString: strerror(errno))); "
                    + "the agent running as that user could not read it"
            )
        }
    }

    /// Creates `path` (and its parents) when missing, then forces it to mode 0700 even when it existed with a looser
    /// mode: the state directory holds the agent token and the releases with their env.
    static func makePrivateDirectory(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard chmod(path, 0o700) == 0 else {
            let reason = String(cString: strerror(errno))
            throw ValidationError(
                "cannot make the state directory \(path) private (mode 0700): \(reason); fix its owner or choose another --state-dir"
            )
        }
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : "\(FileManager.default.currentDirectoryPath)/\(path)"
    }
}

/// The files an enrolment replaces, as they were before it: put back whole (bytes, mode, owner), or removed when they
/// did not exist, if the enrolment fails halfway.
struct EnrolmentFiles {
    private struct Previous {
        var path: String
        /// `nil`: the file did not exist.
        var bytes: [UInt8]?
        var mode: mode_t = 0o600
        var owner: uid_t = 0
        var group: gid_t = 0
    }

    private var files: [Previous] = []

    /// Largest file kept to put back (they are a token, a pin, a config and a record: a few KB).
    static let maximumBytes = 1 << 20

    /// Reads each file as it is now. One that cannot be read (too large, unreadable) is left as the enrolment leaves it.
    static func snapshot(_ paths: [String]) -> EnrolmentFiles {
        var snapshot = EnrolmentFiles()
        for path in paths {
            var info = stat()
            guard lstat(path, &info) == 0 else {
                if errno == ENOENT { snapshot.files.append(Previous(path: path, bytes: nil)) }
                continue
            }
            guard (info.st_mode & S_IFMT) == S_IFREG, info.st_size <= maximumBytes,
                let data = FileManager.default.contents(atPath: path)
            else { continue }
            snapshot.files.append(
                Previous(path: path, bytes: Array(data), mode: info.st_mode & 0o7777, owner: info.st_uid, group: info.st_gid)
            )
        }
        return snapshot
    }

    /// Puts every file back as it was (best effort: each is tried whatever became of the others).
    func restore() {
        for file in files {
            guard let bytes = file.bytes else {
                unlink(file.path)
                continue
            }
            guard (try? AtomicFile.write(bytes, to: file.path, mode: file.mode)) != nil else { continue }
            chmod(file.path, file.mode)
            if geteuid() == 0 { lchown(file.path, file.owner, file.group) }
        }
    }
}
