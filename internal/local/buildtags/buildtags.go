// Package buildtags holds the build tags of a deployed bootstrap, for the
// tools that build one themselves (scripts/invoke, scripts/bench and the
// tests that run the real binaries). The Makefile's GOFLAGS_BUILD, which
// `make build` and `sam build` use, must name the same tags; a test holds
// them together.
package buildtags

// Lambda are the tags of a deployed bootstrap, exactly DESIGN §7's:
// lambda.norpc drops aws-lambda-go's legacy net/rpc mode, which the
// provided.al2023 runtime never uses; nethttpomithttp2 drops net/http's
// HTTP/2 (0.33 MB per bootstrap), which nothing here speaks: the Runtime
// API, SQS, Secrets Manager, DynamoDB and SQIBS all answer HTTP/1.1.
const Lambda = "lambda.norpc,nethttpomithttp2"
