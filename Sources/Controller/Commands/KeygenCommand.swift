import ArgumentParser
import Shared

#if canImport(Glibc)
import Glibc
#endif

/// `ferry-controller keygen --out PREFIX`: a new Ed25519 operator key pair.
struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Generate an Ed25519 signing key pair.",
        discussion: """
            Writes PREFIX.key (PKCS#8 PEM, mode 0600: keep it on the operator side, never on the controller) and \
            PREFIX.pub (SubjectPublicKeyInfo PEM: give it to the controller's --trusted-key and every agent's \
            config), then prints the key id (lowercase hex SHA-256 of the raw public key). Existing files are never \
            overwritten. Keys made with `openssl genpkey -algorithm ed25519` work the same way.
            """
    )

    @Option(name: .long, help: ArgumentHelp("Path prefix for the key files.", valueName: "PREFIX"))
    var out: String

    @Flag(name: .long, help: "Print {keyId, privateKey, publicKey} (the two file paths) as JSON.")
    var json = false

    func run() throws {
        let key = try SigningKey.generate()
        let publicPath = out + ".pub"
        let privatePath = out + ".key"
        // Check both first so a refusal leaves nothing half-written.
        for path in [privatePath, publicPath] where FileManagerShim.exists(path) {
            throw KeyError.alreadyExists(path: path)
        }
        try KeyFile.create(privatePath, contents: try key.pemRepresentation(), mode: 0o600)
        do {
            try KeyFile.create(publicPath, contents: try key.publicKey.pemRepresentation(), mode: 0o644)
        } catch {
            // No private key without its public half: a retry would find it and refuse to overwrite a key.
            unlink(privatePath)
            throw error
        }
        if json {
            let document = JSONValue.object([
                "keyId": .string(key.publicKey.keyID), "privateKey": .string(privatePath), "publicKey": .string(publicPath),
            ])
            Console.print(String(decoding: document.encoded(), as: UTF8.self))
            return
        }
        Console.print(key.publicKey.keyID)
    }
}
