#ifndef FERRY_COPENSSL_SHIM_H
#define FERRY_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/err.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>

// BIO_get_mem_data is a macro.
static inline long ferry_BIO_get_mem_data(BIO *b, char **pp) { return BIO_get_mem_data(b, pp); }

/// How `ferry_pkcs7_verify` ended.
typedef enum {
    FERRY_PKCS7_VERIFIED = 0,
    /// Not one DER PKCS #7 structure (or bytes after it).
    FERRY_PKCS7_NOT_PKCS7 = 1,
    /// PKCS #7, but not SignedData.
    FERRY_PKCS7_NOT_SIGNED = 2,
    /// A detached signature and no content given to check it against.
    FERRY_PKCS7_NO_CONTENT = 3,
    /// No signer verifies with one of the given certificates (another signer, a changed content, no signer at all).
    FERRY_PKCS7_BAD_SIGNATURE = 4,
    /// `pem` holds no certificate.
    FERRY_PKCS7_NO_CERTIFICATES = 5,
    /// Memory ran out.
    FERRY_PKCS7_INTERNAL = 6,
} ferry_pkcs7_result;

/// The certificates in `pem` (PEM, one or more), or NULL when it holds none. Free with `ferry_free_certificates`.
static inline STACK_OF(X509) *ferry_read_certificates(const char *pem, int pemLength) {
    BIO *bio = BIO_new_mem_buf(pem, pemLength);
    if (bio == NULL) return NULL;
    STACK_OF(X509) *certificates = sk_X509_new_null();
    X509 *certificate;
    while (certificates != NULL && (certificate = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(certificates, certificate)) X509_free(certificate);
    }
    ERR_clear_error();
    BIO_free(bio);
    if (certificates != NULL && sk_X509_num(certificates) == 0) {
        sk_X509_free(certificates);
        return NULL;
    }
    return certificates;
}

static inline void ferry_free_certificates(STACK_OF(X509) *certificates) { sk_X509_pop_free(certificates, X509_free); }

static inline int ferry_count_certificates(const char *pem, int pemLength) {
    STACK_OF(X509) *certificates = ferry_read_certificates(pem, pemLength);
    if (certificates == NULL) return 0;
    int count = sk_X509_num(certificates);
    ferry_free_certificates(certificates);
    return count;
}

/// Verifies the DER PKCS #7 SignedData `der` against the certificates in `pem` and only those: PKCS7_NOINTERN, so a
/// certificate the message carries is never a signer's; PKCS7_NOVERIFY, so the given certificates are trusted as they
/// are (they are the trust anchor, e.g. AWS's published instance identity certificate; there is no chain to build).
/// `detached` is the content when the message does not carry it (may be NULL). On FERRY_PKCS7_VERIFIED, `*content`
/// is a memory BIO with the signed content, which the caller frees.
static inline ferry_pkcs7_result ferry_pkcs7_verify(
    const unsigned char *der, long derLength, const char *pem, int pemLength, const unsigned char *detached, int detachedLength,
    BIO **content
) {
    *content = NULL;
    const unsigned char *cursor = der;
    PKCS7 *message = d2i_PKCS7(NULL, &cursor, derLength);
    if (message == NULL || cursor != der + derLength) {
        PKCS7_free(message);
        ERR_clear_error();
        return FERRY_PKCS7_NOT_PKCS7;
    }
    if (!PKCS7_type_is_signed(message)) {
        PKCS7_free(message);
        return FERRY_PKCS7_NOT_SIGNED;
    }
    int isDetached = PKCS7_get_detached(message) ? 1 : 0;
    if (isDetached && detached == NULL) {
        PKCS7_free(message);
        return FERRY_PKCS7_NO_CONTENT;
    }
    STACK_OF(X509) *certificates = ferry_read_certificates(pem, pemLength);
    if (certificates == NULL) {
        PKCS7_free(message);
        return FERRY_PKCS7_NO_CERTIFICATES;
    }
    X509_STORE *store = X509_STORE_new();
    BIO *input = isDetached ? BIO_new_mem_buf(detached, detachedLength) : NULL;
    BIO *output = BIO_new(BIO_s_mem());
    ferry_pkcs7_result result = FERRY_PKCS7_INTERNAL;
    if (store != NULL && output != NULL && (!isDetached || input != NULL)) {
        int flags = PKCS7_NOINTERN | PKCS7_NOVERIFY | PKCS7_BINARY;
        if (PKCS7_verify(message, certificates, store, input, output, flags) == 1) {
            result = FERRY_PKCS7_VERIFIED;
            *content = output;
            output = NULL;
        } else {
            result = FERRY_PKCS7_BAD_SIGNATURE;
        }
    }
    ERR_clear_error();
    BIO_free(output);
    BIO_free(input);
    X509_STORE_free(store);
    ferry_free_certificates(certificates);
    PKCS7_free(message);
    return result;
}
#endif
