/// Plain words for a failed TLS connection, so an operator reading the agent's log or `ferry-agent status` learns what
/// is wrong and what to do, not only a curl code.
package enum TLSFailure {
    /// OpenSSL's certificate verification results (`X509_V_ERR_*`, stable values of its ABI) that Ferry explains.
    private enum VerifyResult: Int {
        case unableToGetIssuerCertificate = 2
        case certificateNotYetValid = 9
        case certificateHasExpired = 10
        case selfSignedLeaf = 18
        case selfSignedInChain = 19
        case unableToGetIssuerCertificateLocally = 20
        case unableToVerifyLeafSignature = 21
        case certificateRevoked = 23
        case invalidPurpose = 26
        case hostnameMismatch = 62
        case ipAddressMismatch = 64
    }

    /// The explanation of a TLS failure: `curlCode` (`CURLE_*`), the certificate verification result
    /// (`CURLINFO_SSL_VERIFYRESULT`, 0 when none) and curl's own message.
    package static func explain(curlCode: Int, verifyResult: Int, curlMessage: String) -> String {
        let lower = curlMessage.lowercased()
        switch VerifyResult(rawValue: verifyResult) {
        case .certificateHasExpired?:
            return "the server's certificate has expired: renew it on the server (or check this host's clock)"
        case .certificateNotYetValid?:
            return "the server's certificate is not valid yet: check this host's clock, or the certificate's start date"
        case .selfSignedLeaf?, .selfSignedInChain?, .unableToGetIssuerCertificate?, .unableToGetIssuerCertificateLocally?,
            .unableToVerifyLeafSignature?:
            return "the server's certificate is not signed by a certificate authority this host trusts (unknown CA): "
                + "give the CA's certificate with --ca-file (FERRY_CA_FILE, config key caFile), or install it in the system trust store"
        case .certificateRevoked?:
            return "the server's certificate has been revoked"
        case .invalidPurpose?:
            return "the server's certificate is not valid for a TLS server (wrong key usage)"
        case .hostnameMismatch?, .ipAddressMismatch?:
            return "the server's certificate is for another host name: its subject alternative names do not cover the host in the URL"
        case nil:
            break
        }
        if lower.contains("subject name") || lower.contains("does not match target host") || lower.contains("no alternative certificate") {
            return "the server's certificate is for another host name: its subject alternative names do not cover the host in the URL"
        }
        switch curlCode {
        case 77:  // CURLE_SSL_CACERT_BADFILE
            return "the CA file (--ca-file, config key caFile) cannot be read or holds no certificate"
        case 58:  // CURLE_SSL_CERTPROBLEM
            return "the local client certificate cannot be used"
        case 35 where lower.contains("wrong version number") || lower.contains("packet length too long"):
            return "the TLS handshake failed: the server does not speak TLS on that port (is it plain http://?)"
        case 35:
            return "the TLS handshake failed (no protocol version or cipher in common, or the server closed the connection)"
        case 60:  // CURLE_PEER_FAILED_VERIFICATION without a result Ferry knows
            return "the server's certificate could not be verified"
        default:
            return "the TLS connection failed"
        }
    }
}
