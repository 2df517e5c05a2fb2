// Package featuretests drives the translator, the xDS server and fleetlb-proxy
// together over real gRPC and real sockets on loopback (in the style of
// Contour's feature tests): set a model, send traffic, assert where it went.
package featuretests
