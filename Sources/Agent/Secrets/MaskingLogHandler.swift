import Logging
import Shared

/// A log handler that masks instance env values (see `SecretMask`) in the message, the metadata (the event's, the
/// logger's own and its provider's) and the error of every event before handing it to `base`, so no agent log line shows one. It also escapes control characters and line
/// feeds (`TerminalText`): a log line quotes what apps wrote (a health check's answer, a PM2 error), and it must stay
/// one line, with no sequence a terminal showing the journal would act on.
struct MaskingLogHandler: LogHandler {
    var base: any LogHandler
    let secrets: InstanceSecrets

    /// The handler's own metadata and provider: kept here, not in `base`, so they are masked with the event's (`base`
    /// would add them to the line as they are).
    var metadata: Logger.Metadata
    var metadataProvider: Logger.MetadataProvider?

    init(base: any LogHandler, secrets: InstanceSecrets) {
        var base = base
        metadata = base.metadata
        metadataProvider = base.metadataProvider
        base.metadata = [:]
        base.metadataProvider = nil
        self.base = base
        self.secrets = secrets
    }

    var logLevel: Logger.Level {
        get { base.logLevel }
        set { base.logLevel = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let mask = secrets.mask
        func clean(_ text: String) -> String {
            TerminalText.safe(mask.isEmpty ? text : mask.apply(text), keepingLineBreaks: false)
        }
        var masked = event
        masked.message = "\(clean(event.message.description))"
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, event in event } }
        if let own = event.metadata { merged.merge(own) { _, event in event } }
        masked.metadata = merged.isEmpty ? nil : merged.mapValues { Self.cleaning($0, with: clean) }
        if let error = event.error { masked.error = MaskedError(description: clean("\(error)")) }
        base.log(event: masked)
    }

    private static func cleaning(_ value: Logger.Metadata.Value, with clean: (String) -> String) -> Logger.Metadata.Value {
        switch value {
        case .string(let text): .string(clean(text))
        case .stringConvertible(let convertible): .string(clean(convertible.description))
        case .dictionary(let fields): .dictionary(fields.mapValues { cleaning($0, with: clean) })
        case .array(let items): .array(items.map { cleaning($0, with: clean) })
        }
    }
}

/// An error's description with secrets masked, standing in for the error in a log event.
private struct MaskedError: Error, CustomStringConvertible {
    var description: String
}
