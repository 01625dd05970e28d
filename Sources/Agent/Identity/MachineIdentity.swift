import Shared

/// Where the agent learns which machine it runs on (`machineIdentity` in the agent config).
///
/// An agent's identity is its state directory and token. A machine image baked from an enrolled instance, or a copied
/// state directory, carries them to other machines; the machine's own identity is what tells the copy apart.
enum MachineIdentitySource: String, Sendable, CaseIterable {
    /// `/etc/machine-id` (systemd's, set at first boot). Kept as a digest: systemd asks that the id itself stays private.
    case machineID = "machine-id"
    /// The EC2 instance id from the instance metadata service (IMDSv2). Survives nothing a clone carries: every
    /// instance launched from an image gets a new one, even when the image kept `/etc/machine-id`.
    case ec2
    /// No check.
    case none
}

/// One machine's identity: its source and value (`ec2`: the instance id; `machine-id`: `sha256:` and 64 hex digits).
struct MachineIdentity: Sendable, Equatable, CustomStringConvertible {
    var source: MachineIdentitySource
    var value: String

    var description: String {
        switch source {
        case .ec2: "instance \(value)"
        case .machineID: "machine id digest \(value.dropFirst("sha256:".count).prefix(12))"
        case .none: "no identity"
        }
    }
}

/// Why this machine's identity could not be read. The agent then cannot tell a copy from the original: it says so and
/// goes on (the controller's identity watch still sees two hosts reporting as one agent).
struct MachineIdentityError: Error, Sendable, Equatable, CustomStringConvertible {
    var description: String
    /// The service could not be reached at all (worth another attempt), as opposed to an answer that was wrong.
    var retryable = false

    static func unreachable(_ description: String) -> MachineIdentityError {
        MachineIdentityError(description: description, retryable: true)
    }
}

/// Reads this machine's identity from the configured source.
struct MachineIdentityReader: Sendable {
    struct Configuration: Sendable {
        var source: MachineIdentitySource
        /// systemd's machine id file. Default `/etc/machine-id`.
        var machineIDFile = Self.defaultMachineIDFile
        /// Base URL of the instance metadata service. Default `http://169.254.169.254` (EC2's).
        var metadataURL = Self.defaultMetadataURL

        /// The defaults, which the agent's config and `enroll` share.
        static let defaultMachineIDFile = "/etc/machine-id"
        static let defaultMetadataURL = "http://169.254.169.254"
        /// Longest one metadata request may take.
        var timeout: Duration = .seconds(2)
        /// Metadata requests tried before giving up (the service can lag a few seconds behind a fresh boot).
        var attempts = 3
        /// The pause between attempts.
        var retryDelay: Duration = .seconds(1)
    }

    let configuration: Configuration

    /// The identity, or `nil` when the source is `none`.
    func read() async throws(MachineIdentityError) -> MachineIdentity? {
        switch configuration.source {
        case .none: return nil
        case .machineID: return try readMachineID()
        case .ec2: return try await readInstanceID()
        }
    }

    // MARK: - /etc/machine-id

    private func readMachineID() throws(MachineIdentityError) -> MachineIdentity {
        let path = configuration.machineIDFile
        let bytes: [UInt8]?
        do {
            bytes = try SmallFile.read(path, limit: 64)
        } catch {
            throw MachineIdentityError(description: "cannot read the machine id: \(error)")
        }
        guard let bytes else { throw MachineIdentityError(description: "cannot read the machine id: \(path) does not exist") }
        let id = Self.machineID(in: bytes)
        guard case .success(let text) = id else {
            if case .failure(let reason) = id { throw MachineIdentityError(description: "the machine id in \(path) \(reason.description)") }
            throw MachineIdentityError(description: "the machine id in \(path) is unusable")
        }
        let digest = SHA256.hash(Array("ferry-agent machine \(text)".utf8))
        return MachineIdentity(source: .machineID, value: "sha256:\(digest.hex)")
    }

    /// The id in a machine-id file: 32 lowercase hexadecimal digits and a newline (machine-id(5)); surrounding white
    /// space, a CRLF included, is allowed.
    static func machineID(in bytes: [UInt8]) -> Result<String, MachineIdentityError> {
        guard bytes.count <= 64 else { return .failure(MachineIdentityError(description: "is longer than 64 bytes")) }
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: [" ", "\t", "\r", "\n"])
        if text.isEmpty { return .failure(MachineIdentityError(description: "is empty (not set up yet: systemd writes it at first boot)")) }
        if text == "uninitialized" {
            return .failure(MachineIdentityError(description: "is \"uninitialized\" (systemd has not committed it yet)"))
        }
        guard Hex.isLowercaseHex(text, count: 32) else {
            return .failure(MachineIdentityError(description: "is not 32 lowercase hexadecimal digits"))
        }
        guard text.utf8.contains(where: { $0 != UInt8(ascii: "0") }) else {
            return .failure(MachineIdentityError(description: "is all zeros"))
        }
        return .success(text)
    }

    // MARK: - EC2 instance metadata (IMDSv2)

    private func readInstanceID() async throws(MachineIdentityError) -> MachineIdentity {
        MachineIdentity(source: .ec2, value: try await retrying { () async throws(MachineIdentityError) in try await instanceIDOnce() })
    }

    /// `attempt` until it succeeds, `configuration.attempts` times at most, `retryDelay` apart.
    func retrying<T>(_ attempt: () async throws(MachineIdentityError) -> T) async throws(MachineIdentityError) -> T {
        var last = MachineIdentityError(description: "no attempt was made")
        for attemptNumber in 1...max(1, configuration.attempts) {
            do throws(MachineIdentityError) {
                return try await attempt()
            } catch {
                last = error
            }
            // A refusal or a malformed id does not get better by asking again; an unreachable service might.
            guard last.retryable, attemptNumber < configuration.attempts else { break }
            do {
                try await Task.sleep(for: configuration.retryDelay)
            } catch {
                break
            }
        }
        throw last
    }

    private func instanceIDOnce() async throws(MachineIdentityError) -> String {
        let session = try await metadataSession(maxResponseBytes: 1024)
        let id = try await session.get("/latest/meta-data/instance-id", what: "the instance id")
        guard InstanceIdentityProof.isInstanceID(id) else {
            throw MachineIdentityError(
                description:
                    "the instance metadata service (\(session.base)/latest/meta-data/instance-id) answered something that is not an instance id (i- and 8 or 17 hex digits)"
            )
        }
        return id
    }

    /// The metadata service with an IMDSv2 session token: what every read of it goes through.
    struct MetadataSession: Sendable {
        let client: HTTPClient
        let base: String
        let token: String

        /// The text at `path` (surrounding white space dropped), or why there is none.
        func get(_ path: String, what: String) async throws(MachineIdentityError) -> String {
            let url = base + path
            let response: HTTPClient.Response
            do {
                response = try await client.send(.init(url: url, headers: ["X-aws-ec2-metadata-token": token]))
            } catch {
                throw MachineIdentityReader.failure(error, url: url)
            }
            guard response.status == 200 else {
                throw MachineIdentityError(description: "the instance metadata service refused \(what) (\(url) answered \(response.status))")
            }
            return String(decoding: response.body, as: UTF8.self).trimmingCharacters(in: [" ", "\t", "\r", "\n"])
        }
    }

    /// Asks for a session token (IMDSv2): `PUT /latest/api/token`.
    func metadataSession(maxResponseBytes: Int) async throws(MachineIdentityError) -> MetadataSession {
        var http = HTTPClient.Configuration()
        http.connectTimeout = configuration.timeout
        http.timeout = configuration.timeout
        http.maxResponseBytes = maxResponseBytes
        http.bypassProxy = true
        let client = HTTPClient(configuration: http)
        let base = configuration.metadataURL.hasSuffix("/") ? String(configuration.metadataURL.dropLast()) : configuration.metadataURL

        let tokenURL = "\(base)/latest/api/token"
        let tokenResponse: HTTPClient.Response
        do {
            tokenResponse = try await client.send(
                .init(method: .put, url: tokenURL, headers: ["X-aws-ec2-metadata-token-ttl-seconds": "60"], body: [])
            )
        } catch {
            throw Self.failure(error, url: tokenURL)
        }
        guard tokenResponse.status == 200 else {
            throw MachineIdentityError(
                description:
                    "the instance metadata service refused a session token (\(tokenURL) answered \(tokenResponse.status)); is this an EC2 instance with IMDSv2 reachable (hop limit 2 in containers)?"
            )
        }
        let token = String(decoding: tokenResponse.body, as: UTF8.self).trimmingCharacters(in: [" ", "\t", "\r", "\n"])
        guard !token.isEmpty, token.utf8.count <= 512, token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw MachineIdentityError(
                description: "the instance metadata service (\(tokenURL)) answered a session token that is empty or not printable"
            )
        }
        return MetadataSession(client: client, base: base, token: token)
    }

    /// A request that got no usable answer. Only a service that could not be reached is asked again.
    static func failure(_ error: HTTPClientError, url: String) -> MachineIdentityError {
        switch error {
        case .connectionFailed, .timedOut:
            return .unreachable("the instance metadata service (\(url)) did not answer: \(error)")
        default:
            return MachineIdentityError(description: "the instance metadata service (\(url)) answered badly: \(error)")
        }
    }
}
