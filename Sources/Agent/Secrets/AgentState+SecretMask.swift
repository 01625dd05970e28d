extension AgentState {
    /// Masks instance env values in every message and failure reason (see `SecretMask`).
    mutating func mask(with mask: SecretMask) {
        guard !mask.isEmpty else { return }
        if var problem = controllerProblem {
            problem.message = mask.apply(problem.message)
            controllerProblem = problem
        }
        for service in Array(services.keys) {
            guard var serviceState = services[service] else { continue }
            serviceState.message = mask.apply(serviceState.message)
            for index in serviceState.failures.indices {
                serviceState.failures[index].reason = mask.apply(serviceState.failures[index].reason)
            }
            services[service] = serviceState
        }
    }
}
