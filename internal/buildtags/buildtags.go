// Package buildtags holds the build tags of a deployed bootstrap, for the
// tools that build one themselves (scripts/invoke, scripts/bench and the
// tests that run the real binaries). The Makefile's GOFLAGS_BUILD, which
// `make build` and `sam build` use, must name the same tags; a test holds
// them together.
package buildtags

// Lambda are the tags of a deployed bootstrap, exactly DESIGN §7's:
// lambda.norpc drops aws-lambda-go's legacy net/rpc mode, which the
// provided.al2023 runtime never uses. (nethttpomithttp2 would take another
// 0.33 MB off each bootstrap, as nothing here needs HTTP/2, but §7 fixes
// the flags; it is proposed there rather than added here.)
const Lambda = "lambda.norpc"
