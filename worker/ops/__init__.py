"""Operations: `agentrt doctor` (is this deployment healthy?) and `agentrt gc` (retention)."""
