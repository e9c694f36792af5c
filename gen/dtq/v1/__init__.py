"""Generated from protos/dtq/v1. Do not edit."""
