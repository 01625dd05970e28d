import Shared

extension MachineIdentityReader {
    /// This instance's signed identity document (`/latest/dynamic/instance-identity/document` and `/pkcs7`), which a
    /// controller set up for it (`serve --instance-identity-cert`) checks at enrolment. Tried as often as the instance
    /// id is; a refusal or an answer too large for a document is not tried again.
    func instanceIdentityProof() async throws(MachineIdentityError) -> InstanceIdentityProof {
        try await retrying { () async throws(MachineIdentityError) in
            let session = try await metadataSession(maxResponseBytes: InstanceIdentityProof.maximumSignatureBytes)
            let document = try await session.get("/latest/dynamic/instance-identity/document", what: "the instance identity document")
            let pkcs7 = try await session.get("/latest/dynamic/instance-identity/pkcs7", what: "the instance identity signature")
            guard document.utf8.count <= InstanceIdentityProof.maximumDocumentBytes, !document.isEmpty, !pkcs7.isEmpty else {
                throw MachineIdentityError(description: "the instance metadata service answered an empty or oversized instance identity document")
            }
            return InstanceIdentityProof(document: document, pkcs7: pkcs7)
        }
    }
}
