import Logging

/// A log handler that masks instance env values (see `SecretMask`) in the message, the metadata and the error of every
/// event before handing it to `base`, so no agent log line shows one.
struct MaskingLogHandler: LogHandler {
    var base: any LogHandler
    let secrets: InstanceSecrets

    var logLevel: Logger.Level {
        get { base.logLevel }
        set { base.logLevel = newValue }
    }

    var metadata: Logger.Metadata {
        get { base.metadata }
        set { base.metadata = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { base.metadataProvider }
        set { base.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { base[metadataKey: key] }
        set { base[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        let mask = secrets.mask
        guard !mask.isEmpty else {
            base.log(event: event)
            return
        }
        var masked = event
        masked.message = "\(mask.apply(event.message.description))"
        masked.metadata = event.metadata?.mapValues { Self.masking($0, with: mask) }
        if let error = event.error { masked.error = MaskedError(description: mask.apply("\(error)")) }
        base.log(event: masked)
    }

    private static func masking(_ value: Logger.Metadata.Value, with mask: SecretMask) -> Logger.Metadata.Value {
        switch value {
        case .string(let text): .string(mask.apply(text))
        case .stringConvertible(let convertible): .string(mask.apply(convertible.description))
        case .dictionary(let fields): .dictionary(fields.mapValues { masking($0, with: mask) })
        case .array(let items): .array(items.map { masking($0, with: mask) })
        }
    }
}

/// An error's description with secrets masked, standing in for the error in a log event.
private struct MaskedError: Error, CustomStringConvertible {
    var description: String
}
