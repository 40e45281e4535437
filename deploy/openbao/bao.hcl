# OpenBao server of the compose stack: integrated storage (raft, one node) on the `openbao-data`
# volume. (OpenBao has no `file` backend and no mlock setting.) For high availability run three nodes.
# The API listens without TLS on the compose network only (no published port); put TLS on it
# (tls_cert_file / tls_key_file, and VAULT_CACERT on the clients) as soon as it leaves one host.
ui           = true
api_addr     = "http://openbao:8200"
cluster_addr = "http://openbao:8201"

storage "raft" {
  path    = "/openbao/file"
  node_id = "openbao-1"
}

listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = true
}
